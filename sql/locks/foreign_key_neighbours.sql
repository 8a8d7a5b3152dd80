-- The tables a foreign key links to the given ones, on either side (the given ones left out):
-- dropping a table takes ACCESS EXCLUSIVE on each of them too, to drop the key's triggers there.
WITH given AS (
    SELECT to_regclass(name) AS oid FROM unnest(%(tables)s::text[]) AS name
)
SELECT DISTINCT n.nspname || '.' || c.relname AS table_name
  FROM pg_constraint AS k
  JOIN pg_class AS c ON c.oid IN (k.conrelid, k.confrelid)
  JOIN pg_namespace AS n ON n.oid = c.relnamespace
 WHERE k.contype = 'f'
   AND (k.conrelid IN (SELECT oid FROM given) OR k.confrelid IN (SELECT oid FROM given))
   AND c.oid NOT IN (SELECT oid FROM given WHERE oid IS NOT NULL)
 ORDER BY 1

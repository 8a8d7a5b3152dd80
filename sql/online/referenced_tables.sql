-- The tables the foreign keys of %(tables)s (names) reference, as (oid, schema, name).
SELECT DISTINCT c.oid, n.nspname::text, c.relname::text
  FROM pg_catalog.pg_constraint con
  JOIN pg_catalog.pg_class c ON c.oid = con.confrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE con.contype = 'f'
   AND con.conrelid = ANY (SELECT to_regclass(t) FROM unnest(%(tables)s::text[]) AS t)
 ORDER BY 2, 3

-- The columns of %(table)s by position: what the copy must keep (a lock phase that renames
-- a column or changes its type cannot run online) and which ones rows are copied through.
SELECT a.attnum, a.attname::text, format_type(a.atttypid, a.atttypmod) AS type,
       a.attgenerated <> '' AS generated,
       EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con
                WHERE con.conrelid = a.attrelid AND con.contype = 'p'
                  AND a.attnum = ANY (con.conkey)) AS in_primary_key,
       coalesce((SELECT array_position(con.conkey, a.attnum) FROM pg_catalog.pg_constraint con
                  WHERE con.conrelid = a.attrelid AND con.contype = 'p'), 0) AS key_position
  FROM pg_catalog.pg_attribute a
 WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum

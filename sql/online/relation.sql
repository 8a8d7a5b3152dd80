-- %(table)s as (oid, schema, name).
SELECT c.oid, n.nspname::text, c.relname::text
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = %(table)s::regclass

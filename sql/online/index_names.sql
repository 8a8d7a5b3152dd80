-- The names of %(table)s's indexes: a lock phase may name them schema-qualified.
SELECT c.relname::text
  FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
 WHERE i.indrelid = %(table)s::regclass

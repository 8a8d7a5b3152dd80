-- The relations a lock phase tried on the copy may lock as it likes: the copy's own (in
-- %(schema)s) and the catalogs'.
SELECT c.oid
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('pg_catalog', 'pg_toast', %(schema)s)

-- The relations that exist when the traced transaction starts: a lock on any other is on a
-- relation the script created.
SELECT c.oid::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')

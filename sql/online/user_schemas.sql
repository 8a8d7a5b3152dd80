-- The schemas whose objects a lock phase must leave alone (all but the system's and the
-- rollout's own).
SELECT nspname::text FROM pg_catalog.pg_namespace
 WHERE nspname !~ '^(pg_|information_schema$|rollout)'
 ORDER BY 1

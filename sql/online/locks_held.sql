-- The relation locks this session holds, and in which mode: what a lock phase tried on the
-- copy really touched.
SELECT l.relation::oid AS relation, l.relation::regclass::text AS name, l.mode
  FROM pg_catalog.pg_locks l
 WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
   AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())

-- The relation locks this transaction holds (one row per relation and mode), each with the
-- table it belongs to (an index's table, else itself) and that table's planner row estimate.
SELECT l.relation::bigint AS oid,
       n.nspname || '.' || c.relname AS relation,
       c.relkind::text AS relkind,
       l.mode,
       coalesce(tn.nspname || '.' || t.relname, n.nspname || '.' || c.relname) AS table_name,
       coalesce(t.oid, c.oid)::bigint AS table_oid,
       coalesce(t.reltuples, c.reltuples)::bigint AS table_reltuples
  FROM pg_locks l
  JOIN pg_class c ON c.oid = l.relation
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_index i ON i.indexrelid = c.oid
  LEFT JOIN pg_class t ON t.oid = i.indrelid
  LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
 WHERE l.locktype = 'relation'
   AND l.pid = pg_backend_pid()
   AND l.granted
   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
   AND n.nspname NOT LIKE 'pg_temp%'

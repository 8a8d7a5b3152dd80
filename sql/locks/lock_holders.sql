-- Every other session holding or awaiting a lock on the given tables, and whom it waits for
-- (pg_blocking_pids): logged when an attempt gave way, to name what it lost to.
SELECT a.pid, a.application_name, l.relation::regclass::text AS table_name, l.mode, l.granted,
       pg_blocking_pids(a.pid) AS blocked_by, a.state,
       round(extract(epoch FROM clock_timestamp() - a.xact_start)::numeric, 1) AS xact_s
  FROM pg_locks AS l
  JOIN pg_stat_activity AS a ON a.pid = l.pid
 WHERE l.locktype = 'relation'
   AND l.relation IN (SELECT to_regclass(name) FROM unnest(%(tables)s::text[]) AS name)
   AND a.pid <> pg_backend_pid()
 ORDER BY a.pid, table_name, l.mode

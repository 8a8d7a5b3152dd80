-- Every session of this database waiting for a lock, with each session it waits for.
SELECT w.application_name AS waiter, b.application_name AS blocker
  FROM pg_stat_activity AS w
 CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocking(pid)
  JOIN pg_stat_activity AS b ON b.pid = blocking.pid
 WHERE w.datname = current_database()
   AND w.wait_event_type = 'Lock'
   AND w.pid <> pg_backend_pid()

-- Who holds the rollout's advisory lock on this database, for the message that says so.
SELECT coalesce(string_agg(coalesce(a.application_name, '?') || ' (pid ' || l.pid || ')', ', '),
                'unknown')
  FROM pg_locks AS l
  LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.objid = %(key)s AND l.granted

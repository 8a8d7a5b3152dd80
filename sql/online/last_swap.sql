-- The last online swap that committed on a table: the version and direction it applied.
SELECT version, direction, operation, finished_at
  FROM rollout.online_phase
 WHERE table_name = %(table)s AND phase = 'swap' AND status = 'done'
 ORDER BY id DESC
 LIMIT 1

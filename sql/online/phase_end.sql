-- A phase of an online apply ends (done or failed), with its figures.
UPDATE rollout.online_phase
   SET status = %(status)s, finished_at = clock_timestamp(), detail = %(detail)s::jsonb
 WHERE id = %(id)s

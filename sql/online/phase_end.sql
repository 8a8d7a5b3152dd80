-- A phase of an online apply ends (done or failed), with its figures (kept beside what the row
-- said already: the swap's "committed", written in its own transaction).
UPDATE rollout.online_phase
   SET status = %(status)s, finished_at = clock_timestamp(),
       detail = coalesce(detail, '{}'::jsonb) || %(detail)s::jsonb
 WHERE id = %(id)s

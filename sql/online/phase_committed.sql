-- The swap's phase marked done inside the swap's own transaction: the row says done exactly
-- when the swap committed, even if its process dies right after. Its end updates it again.
UPDATE rollout.online_phase
   SET status = 'done', finished_at = clock_timestamp(),
       detail = coalesce(detail, '{}'::jsonb) || '{"committed": true}'::jsonb
 WHERE id = %(id)s

-- Phases whose process ended before they did (a kill, a lost connection), closed as failed and
-- saying so. Run only under the online apply's lock: no other online operation is running.
UPDATE rollout.online_phase
   SET status = 'failed', finished_at = clock_timestamp(),
       detail = coalesce(detail, '{}'::jsonb)
                || jsonb_build_object('error', 'interrupted: its process ended before the phase did')
 WHERE status = 'started'
RETURNING operation, phase

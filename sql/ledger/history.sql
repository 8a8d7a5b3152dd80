-- Every row of the ledger, oldest first.
SELECT id, version, checksum, direction, outcome, run_id, actor, started_at, finished_at,
       duration_s::float8 AS duration_s, lock_s::float8 AS lock_s, detail,
       to_jsonb(l) -> 'row_effects' AS row_effects, to_jsonb(l) -> 'session' AS session
  FROM rollout.ledger AS l
 ORDER BY id

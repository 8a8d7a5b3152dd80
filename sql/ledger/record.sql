INSERT INTO rollout.ledger
       (version, checksum, direction, outcome, run_id, actor, started_at, duration_s, lock_s,
        detail, row_effects, session)
VALUES (%(version)s, %(checksum)s, %(direction)s, %(outcome)s, %(run_id)s, %(actor)s,
        %(started_at)s, %(duration_s)s, %(lock_s)s, %(detail)s, %(row_effects)s, %(session)s)
RETURNING id

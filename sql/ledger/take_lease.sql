-- Take this database's lease for a run, or keep it when the run holds it already; returns the
-- holder either way (the caller compares run ids).
WITH taken AS (
    INSERT INTO rollout.lease (run_id, dag_id, target, actor)
    VALUES (%(run_id)s, %(dag_id)s, %(target)s, %(actor)s)
    ON CONFLICT (held) DO NOTHING
    RETURNING run_id, dag_id, target, actor, taken_at
)
SELECT run_id, dag_id, target, actor, taken_at FROM taken
UNION ALL
SELECT run_id, dag_id, target, actor, taken_at FROM rollout.lease
 WHERE NOT EXISTS (SELECT 1 FROM taken)

-- Who holds this database's lease, if anyone.
SELECT run_id, dag_id, target, actor, taken_at FROM rollout.lease

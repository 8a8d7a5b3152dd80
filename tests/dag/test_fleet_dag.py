"""The fleet DAG as Airflow's DagBag parses it: the staging story, one gate, then a fixed chain
of waves, each its approval, its window and one mapped `target` task (one process per target);
rollbacks and report."""

from __future__ import annotations

import itertools

import pytest
from airflow.dag_processing.dagbag import DagBag

from rollout.fleet import FLEET_DAG_PARAMS, MAX_WAVES, target_task_id
from rollout.paths import PROJECT_ROOT

STAGING = [
    "preflight", "apply_staging", "validate_staging", "capture_db_diff", "run_assignment_tests",
    "check_window_and_budget", "approve_production",
]  # fmt: skip


@pytest.fixture(scope="module")
def dag():
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags["fleet_rollout"]


def test_staging_then_the_gate_then_the_waves_in_order(dag):
    for index, (earlier, later) in enumerate(itertools.pairwise(STAGING)):
        upstream = dag.get_task(later).upstream_task_ids
        assert earlier in upstream and upstream <= set(STAGING[: index + 1]), later
    assert dag.get_task("plan_targets").upstream_task_ids == {"approve_production", "preflight"}
    assert dag.get_task("wave_0.wait_for_window").upstream_task_ids == {
        "plan_targets", "preflight", "apply_staging",
    }  # fmt: skip
    assert dag.doc_md
    for k in range(MAX_WAVES):
        target = dag.get_task(target_task_id(k))
        # each instance takes its entry from the wave's `targets`, as mapped tasks do
        assert target.upstream_task_ids == {f"wave_{k}.wait_for_window", f"wave_{k}.targets"}
        # The work of a target takes a slot of the fleet's pool; the UI names it by its id.
        assert target.pool == "rollout_fleet"
        assert "target_conn_id" in target.map_index_template
        if k:
            # a wave starts after every target of the wave before, all instances
            for root in (f"wave_{k}.approve", f"wave_{k}.targets"):
                assert dag.get_task(root).upstream_task_ids == {target_task_id(k - 1)}
                assert dag.get_task(root).trigger_rule == "none_failed_min_one_success"
            # after its approval; it also takes staging's apply and the preflight's plan
            assert dag.get_task(f"wave_{k}.wait_for_window").upstream_task_ids == {
                f"wave_{k}.approve", "preflight", "apply_staging",
            }  # fmt: skip
    assert dag.get_task("wave_0.wait_for_window").mode == "reschedule"
    assert dag.max_active_runs == 1


def test_wave_gates_are_the_providers_approval(dag):
    gates = [t for t in dag.task_ids if t.endswith(".approve")]
    assert gates == [f"wave_{k}.approve" for k in range(1, MAX_WAVES)]
    assert dag.get_task(gates[0]).__class__.__mro__[1].__name__ == "ApprovalOperator"


def test_rollbacks_and_report_run_when_they_must(dag):
    rollback = dag.get_task("rollback_targets")
    assert rollback.trigger_rule == "all_done"
    assert target_task_id(MAX_WAVES - 1) in rollback.upstream_task_ids
    staging = dag.get_task("rollback_staging")
    assert staging.trigger_rule == "one_failed"
    assert staging.upstream_task_ids == set(STAGING[1:]) - {"check_window_and_budget"}
    report = dag.get_task("report")
    assert report.trigger_rule == "all_done"
    assert {"rollback_targets", "rollback_staging", target_task_id(0)} <= (report.upstream_task_ids)
    assert all(task.retries == 0 for task in dag.tasks)


def test_params_are_the_fleet_form(dag):
    assert set(dag.params) == set(FLEET_DAG_PARAMS)
    assert "production_conn_id" not in dag.params
    assert dag.params["production_targets"] == ["rollout_production"]
    with pytest.raises(Exception, match=r"minItems|non-empty|should be non-empty|too short"):
        dag.params.get_param("production_targets").resolve([])

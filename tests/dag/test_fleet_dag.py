"""The fleet DAG as Airflow's DagBag parses it: the staging story, one gate, then the production
targets as one mapped group per target, wave gates, rollbacks and the report."""

from __future__ import annotations

import itertools

import pytest
from airflow.dag_processing.dagbag import DagBag

from rollout.fleet import FLEET_DAG_PARAMS, TARGET_TASKS
from rollout.paths import PROJECT_ROOT

STAGING = [
    "preflight", "apply_staging", "validate_staging", "capture_db_diff", "run_assignment_tests",
    "approve_production",
]  # fmt: skip


@pytest.fixture(scope="module")
def dag():
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags["fleet_rollout"]


def test_staging_then_the_gate_then_the_targets(dag):
    for earlier, later in itertools.pairwise(STAGING):
        assert dag.get_task(later).upstream_task_ids == {earlier}, later
    targets = [f"target.{t}" for t in TARGET_TASKS]
    for earlier, later in itertools.pairwise(targets):
        # Each takes its target's entry from plan_targets, as mapped tasks do.
        assert dag.get_task(later).upstream_task_ids == {earlier, "plan_targets"}, later
    assert dag.get_task("target.wait_for_turn").upstream_task_ids == {"plan_targets"}
    assert dag.get_task("plan_targets").upstream_task_ids == {"approve_production"}
    assert dag.get_task("target.wait_for_turn").mode == "reschedule"
    # The work of a target takes a slot of the fleet's pool; waiting takes none.
    assert {dag.get_task(t).pool for t in targets[1:]} == {"rollout_fleet"}
    assert dag.max_active_runs == 1


def test_wave_gates_are_the_providers_approval(dag):
    gate = dag.get_task("wave_gate.approve_wave")
    assert gate.__class__.__mro__[1].__name__ == "ApprovalOperator"
    assert gate.upstream_task_ids == {"wave_gate.wait_for_wave"}
    assert dag.get_task("wave_gate.wait_for_wave").upstream_task_ids == {
        "plan_wave_gates",
        "approve_production",
    }


def test_rollbacks_and_report_run_when_they_must(dag):
    rollback = dag.get_task("rollback_target")
    assert rollback.trigger_rule == "all_done"
    assert "target.monitor" in rollback.upstream_task_ids
    assert "wave_gate.approve_wave" in rollback.upstream_task_ids
    staging = dag.get_task("rollback_staging")
    assert staging.trigger_rule == "one_failed"
    assert staging.upstream_task_ids == set(STAGING[1:])
    report = dag.get_task("report")
    assert report.trigger_rule == "all_done"
    assert {"rollback_target", "rollback_staging", "target.monitor"} <= report.upstream_task_ids
    assert all(task.retries == 0 for task in dag.tasks)


def test_params_are_the_fleet_form(dag):
    assert set(dag.params) == set(FLEET_DAG_PARAMS)
    assert "production_conn_id" not in dag.params
    assert dag.params["production_targets"] == ["rollout_production"]
    with pytest.raises(Exception, match=r"minItems|non-empty|should be non-empty|too short"):
        dag.params.get_param("production_targets").resolve([])

"""The DAG as Airflow's own DagBag parses it: imports cleanly, tells the story in order, and
wires the rollbacks and the report with the trigger rules that make them run when they must."""

from __future__ import annotations

import itertools

import pytest
from airflow.dag_processing.dagbag import DagBag

from rollout.paths import PROJECT_ROOT
from rollout.settings import PARAM_SCHEMA

STORY = [
    "preflight", "apply_staging", "validate_staging", "capture_db_diff", "run_assignment_tests",
    "check_window_and_budget", "approve_production", "wait_for_window", "baseline_production_perf", "apply_production",
    "validate_production", "monitor_production_perf",
]  # fmt: skip


@pytest.fixture(scope="module")
def dag():
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags["migration_rollout"]


def test_the_story_runs_in_order(dag):
    """Each task after the one before it, and after nothing later in the story (a task may also
    follow an earlier one whose result it takes: the graph shows the data flow)."""
    for index, (earlier, later) in enumerate(itertools.pairwise(STORY)):
        upstream = dag.get_task(later).upstream_task_ids
        assert earlier in upstream and upstream <= set(STORY[: index + 1]), later
    assert dag.get_task("wait_for_window").upstream_task_ids == {
        "approve_production", "apply_staging", "preflight",
    }  # fmt: skip
    assert "wait_for_window" in dag.get_task("apply_production").upstream_task_ids
    assert dag.doc_md and "Four eyes" in dag.doc_md  # what a person reads in the UI
    assert dag.max_active_runs == 1
    assert dag.get_task("approve_production").__class__.__mro__[1].__name__ == "ApprovalOperator"
    assert dag.get_task("wait_for_window").mode == "reschedule"  # no worker slot held


def test_rollbacks_and_report_run_when_they_must(dag):
    staging = dag.get_task("rollback_staging")
    assert staging.trigger_rule == "one_failed"
    # staging steps and the gate (a refused window check leaves staging as applied)
    assert staging.upstream_task_ids == set(STORY[1:5]) | {"approve_production"}
    production = dag.get_task("rollback_production")
    assert production.trigger_rule == "one_failed"
    assert production.upstream_task_ids == set(STORY[9:])
    report = dag.get_task("report")
    assert report.trigger_rule == "all_done"
    assert report.upstream_task_ids == set(STORY) | {"rollback_staging", "rollback_production"}
    assert all(task.retries == 0 for task in dag.tasks)


def test_params_are_the_validated_trigger_form(dag):
    assert set(dag.params) == set(PARAM_SCHEMA)
    assert dag.params["window_start"] == "now"
    assert dag.params.get_param("on_reject").schema["enum"] == ["rollback_staging", "keep_staging"]
    with pytest.raises(Exception, match=r"window_minutes|minimum"):
        dag.params.get_param("window_minutes").resolve(0)

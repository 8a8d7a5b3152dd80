"""The fleet DAG run by a real Airflow over several real production databases (on the embedded
PostgreSQL 18 and, when it answers, the local server too), the gates answered through the HITL
REST API: a failed canary stops the fleet; a failure mid-wave rolls the fleet back or leaves
the healthy targets applied, per the run's policy; a re-run continues where the last stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rollout import db
from rollout.airflow_paths import safe_run_id
from rollout.airflow_stack import APPROVER
from rollout.demo_rollout import follow_run
from rollout.fleet import MAX_WAVES, target_task_id
from tests.e2e.conftest import VERSION
from tests.target_state import migrated, outcomes

pytestmark = pytest.mark.slow
DAG_ID = "fleet_rollout"
BAD_FUNCTION = (
    "CREATE FUNCTION public.upsert_allocation() RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
    'INSERT INTO public.allocations (restaurant_id, resource_type, resource_id, "window") '
    'SELECT restaurant_id, resource_type, resource_id, "window" FROM public.allocations LIMIT 1 '
    "ON CONFLICT ON CONSTRAINT allocations_no_overlap DO NOTHING; END $$"
)


def fleet_conf(scenario: str, **params) -> dict:
    return {"staging_conn_id": f"s_{scenario}", "production_targets": [f"f_{scenario}_*"],
            "canary_size": 1, "wave_size": 2, "monitor_period_s": 0, "lock_retries": 1,
            "retry_backoff_s": 0.5, "approvers": [APPROVER], "version": VERSION, **params}  # fmt: skip


def run_fleet(airflow, params: dict) -> tuple[str, dict]:
    state, report, _ = run_fleet_with_id(airflow, params)
    return state, report


def run_fleet_with_id(airflow, params: dict) -> tuple[str, dict, str]:
    run_id = airflow.trigger(params, DAG_ID)
    state, _ = follow_run(
        airflow, run_id, lambda _m: None, dag_id=DAG_ID, timeout_s=900, quiet_tasks=True
    )
    folder = Path(airflow.extra_env["ROLLOUT_ARTIFACTS_URL"].removeprefix("file://"))
    report = folder / DAG_ID / safe_run_id(run_id) / "fleet-report.json"
    assert report.is_file(), f"no fleet report for {run_id} ({state})"
    return state, json.loads(report.read_text()), run_id


def target_instances(airflow, run_id: str) -> dict[str, str]:
    """{name the UI shows: state} of every target's task instance in the run."""
    found = {}
    for k in range(MAX_WAVES):
        answer = airflow.request(
            "GET",
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{target_task_id(k)}/listMapped",
        )
        if answer.status_code == 404:  # a wave the plan left empty has no instances
            continue
        answer.raise_for_status()
        for ti in answer.json()["task_instances"]:
            if ti["map_index"] >= 0:
                found[ti["rendered_map_index"]] = ti["state"]
    return found


def by_target(report: dict) -> dict[str, tuple[str, str]]:
    return {row["conn_id"]: (row["state"], row["why"]) for row in report["targets"]}


def break_target(dsn: str) -> None:
    """A function that uses the new constraint as an ON CONFLICT arbiter: preflight refuses."""
    with db.connect(dsn) as conn:
        conn.execute(BAD_FUNCTION)


def test_a_failed_canary_stops_the_fleet(airflow, fleet_targets):
    targets = fleet_targets["fleet_canary"]
    break_target(targets["f_fleet_canary_0"])
    state, report = run_fleet(airflow, fleet_conf("fleet_canary"))
    assert state == "failed"
    rows = by_target(report)
    assert rows["f_fleet_canary_0"][0] == "refused"
    assert "ON CONFLICT" in rows["f_fleet_canary_0"][1]
    for conn_id in ("f_fleet_canary_1", "f_fleet_canary_2"):
        assert rows[conn_id] == (
            "not applied", "not started: the fleet stopped after f_fleet_canary_0 failed"
        )  # fmt: skip
    assert not any(migrated(targets[f"f_fleet_canary_{i}"]) for i in range(3))
    assert migrated(targets["staging"])  # a production failure leaves staging as it is
    assert report["outcome"].startswith("failed: ")


def test_a_failure_mid_wave_rolls_the_whole_fleet_back(airflow, fleet_targets):
    targets = fleet_targets["fleet_all"]
    break_target(targets["f_fleet_all_2"])  # wave 1: f_1 and f_2 side by side
    state, report = run_fleet(airflow, fleet_conf("fleet_all", on_target_failure="rollback_all"))
    assert state == "failed"
    rows = by_target(report)
    assert rows["f_fleet_all_0"][0] == "rolled back"
    assert outcomes(targets["f_fleet_all_0"]) == ["applied", "rolled_back"]
    # f_1 ran beside the failing target: applied then rolled back, or stopped before starting.
    assert rows["f_fleet_all_1"][0] in ("rolled back", "not applied")
    assert rows["f_fleet_all_2"][0] == "refused"
    for conn_id in ("f_fleet_all_3", "f_fleet_all_4"):
        assert rows[conn_id][0] == "not applied"
        assert "the fleet stopped after f_fleet_all_2 failed" in rows[conn_id][1]
    assert not any(migrated(targets[f"f_fleet_all_{i}"]) for i in range(5))


def test_a_failure_mid_wave_leaves_the_healthy_applied_and_a_rerun_continues(
    airflow, fleet_targets, finished_runs
):
    targets = fleet_targets["fleet_healthy"]
    names = [f"f_fleet_healthy_{i}" for i in range(5)]
    break_target(targets[names[2]])
    state, report, first_run = run_fleet_with_id(airflow, fleet_conf("fleet_healthy"))
    assert state == "failed"
    finished_runs["fleet"] = first_run  # read again by test_rollout_review.py
    rows = by_target(report)
    assert rows[names[0]] == ("applied", "")
    assert rows[names[2]][0] == "refused"
    assert [rows[n][0] for n in names[3:]] == ["not applied", "not applied"]
    assert migrated(targets[names[0]]) and not migrated(targets[names[3]])
    first_pass = {n: migrated(targets[n]) for n in names}

    with db.connect(targets[names[2]]) as conn:  # the owner fixes what preflight named
        conn.execute("DROP FUNCTION public.upsert_allocation()")
    state, report, run_id = run_fleet_with_id(airflow, fleet_conf("fleet_healthy"))
    assert state == "success", report
    # Each target is one task instance, named in the UI by its connection id, with its state.
    assert target_instances(airflow, run_id) == dict.fromkeys(names, "success")
    assert {row["state"] for row in report["targets"]} == {"applied"}
    assert by_target(report)[names[0]][1].startswith("applied by run ")  # the first run's
    assert by_target(report)[names[3]][1] == ""  # this run's own
    for name in names:
        assert migrated(targets[name])
        # applied once: a target the first run applied was a no-op the second time
        assert outcomes(targets[name]).count("applied") == 1, name
        assert first_pass[name] or outcomes(targets[name]) == ["applied"]
    assert outcomes(targets["staging"]) == ["applied"]

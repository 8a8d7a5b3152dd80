"""The local Airflow as an operator lives with it: its DAGs ready to run once it has started, and
a rollout that carries on when the api-server, scheduler and dag-processor are killed and
started again while the gate and the window wait."""

from __future__ import annotations

import datetime as dt

import pytest

from rollout.airflow_stack import APPROVER, DAG_ID, FINISHED, FLEET_DAG_ID
from rollout.workload import LiveApplication
from tests.e2e.conftest import VERSION
from tests.e2e.test_rollout_dag import STORY, artifacts, conf, explain
from tests.target_state import ledger_rows, migrated

pytestmark = pytest.mark.slow

# The window opens this long after the trigger: time for staging's steps and a restart before
# the gate is answered, and for a second restart while wait_for_window waits for the window.
WINDOW_LEAD = dt.timedelta(minutes=5)


def test_both_dags_are_unpaused_and_a_run_triggered_through_rest_leaves_queued(airflow):
    """Nothing in the suite unpauses a DAG (trigger() refuses a paused one): what a person sees
    after `make up` is what Airflow made of the DAGs when it parsed them."""
    for dag_id in (DAG_ID, FLEET_DAG_ID):
        dag = airflow.request("GET", f"/api/v2/dags/{dag_id}").json()
        assert dag["is_paused"] is False, dag_id
    # The README's call, nothing before it. A bad time zone ends the run at preflight, before
    # any connection: the run left `queued`, ran, and touched nothing.
    response = airflow.request(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
        json={"conf": conf("params", window_timezone="Mars/Olympus"), "logical_date": None},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
    state = airflow.wait_until(
        lambda: (s := airflow.run_state(run_id)) in FINISHED and s, 300, f"{run_id} to finish"
    )
    assert state == "failed" and airflow.task_states(run_id)["preflight"] == "failed"
    assert "window_timezone" in (artifacts(airflow, run_id) / "failures/preflight.txt").read_text()


@pytest.fixture
def restarted_airflow(airflow):
    """The shared stack, left running for the tests after this one whatever happened."""
    yield airflow
    if not airflow.processes or any(p.poll() is not None for p in airflow.processes.values()):
        airflow.restart(say=lambda _m: None)


def restart(airflow) -> None:
    """Kill the stack's processes and start them again; the old ones are gone."""
    old = dict(airflow.processes)
    airflow.restart(say=lambda _m: None)
    assert all(proc.poll() is not None for proc in old.values())
    assert {name: proc.pid for name, proc in airflow.processes.items()}.keys() == old.keys()
    assert not {proc.pid for proc in old.values()} & {p.pid for p in airflow.processes.values()}


def test_a_rollout_carries_on_across_airflow_restarts(restarted_airflow, e2e_targets):
    """Restarted while the gate waits, the reviewer answers the restarted Airflow; restarted
    again while wait_for_window waits, the run still applies production once, in its window,
    with the application writing throughout."""
    airflow = restarted_airflow
    targets = e2e_targets["restart"]
    opens = (dt.datetime.now(dt.UTC) + WINDOW_LEAD).replace(second=0, microsecond=0)
    params = conf("restart", window_start=opens.strftime("%Y-%m-%d %H:%M"), window_timezone="UTC")
    with LiveApplication(targets["production"]) as app:
        run_id = airflow.trigger(params)
        airflow.wait_for_task(run_id, "approve_production", ("awaiting_input",), timeout=420)
        airflow.wait_until(
            lambda: airflow.gate_settled(run_id), 120, "the gate to be parked for input"
        )
        restart(airflow)
        [gate] = airflow.pending_approvals(run_id)  # the restarted Airflow still asks
        assert gate["task_instance"]["task_id"] == "approve_production"
        airflow.answer(run_id, "Approve")

        waiting = airflow.wait_for_task(
            run_id, "wait_for_window", ("up_for_reschedule", "success"), timeout=300
        )
        assert waiting == "up_for_reschedule" and dt.datetime.now(dt.UTC) < opens, (
            f"the window opened ({opens:%H:%M} UTC) before the second restart: "
            "raise WINDOW_LEAD for this machine"
        )
        restart(airflow)
        assert not migrated(targets["production"])  # the window is not open yet

        state = airflow.wait_until(
            lambda: (s := airflow.run_state(run_id)) in FINISHED and s,
            WINDOW_LEAD.total_seconds() + 600,
            f"{run_id} to finish",
        )
    states = airflow.task_states(run_id)
    assert state == "success", explain(airflow, run_id, states)
    assert all(states[task] == "success" for task in STORY)
    assert app.committed() > 20 and not app.bookings.stats.errors and not app.outbox.errors

    # Production's ledger: one row, this run's apply, inside the window (never before it).
    [row] = ledger_rows(targets["production"])
    assert (row["version"], row["outcome"], row["run_id"]) == (VERSION, "applied", run_id)
    assert row["started_at"] >= opens
    details = airflow.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/hitlDetails")
    [approval] = details.json()["hitl_details"]
    assert approval["chosen_options"] == ["Approve"]
    assert approval["responded_by_user"]["name"] == APPROVER  # the answer given after the restart

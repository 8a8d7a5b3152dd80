"""The rollout DAG run by a real Airflow against real PostgreSQL, the approval answered through
the HITL REST API (the call the UI's Approve and Reject buttons make)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from rollout import db
from rollout.airflow_support import safe_run_id
from rollout.demo_rollout import APPROVAL_GRACE_S, follow_run
from tests.target_state import migrated, outcomes

pytestmark = pytest.mark.slow

STORY = [
    "preflight", "apply_staging", "validate_staging", "capture_db_diff", "run_assignment_tests",
    "approve_production", "wait_for_window", "baseline_production_perf", "apply_production",
    "validate_production", "monitor_production_perf",
]  # fmt: skip


def conf(scenario: str, **params) -> dict:
    return {"staging_conn_id": f"s_{scenario}", "production_conn_id": f"p_{scenario}",
            "monitor_period_s": 0, "lock_retries": 1, "retry_backoff_s": 0.5, **params}  # fmt: skip


def artifacts(airflow, run_id: str) -> Path:
    return (
        Path(airflow.extra_env["ROLLOUT_ARTIFACTS_URL"].removeprefix("file://"))
        / ("migration_rollout")
        / safe_run_id(run_id)
    )


def run(airflow, params: dict, approve: str | None = "Approve") -> tuple[str, str, dict]:
    run_id = airflow.trigger(params)
    state, states = follow_run(airflow, run_id, lambda _m: None, approve=approve, timeout_s=600)
    return run_id, state, states


def explain(airflow, run_id: str, states: dict) -> str:
    """For a failed assertion: the tasks that did not succeed and the reasons they kept."""
    failures = artifacts(airflow, run_id) / "failures"
    reasons = (
        {f.stem: f.read_text().strip() for f in failures.glob("*.txt")} if failures.exists() else {}
    )
    return str({t: s for t, s in states.items() if s != "success"}) + " " + str(reasons)


def notifications(airflow, run_id: str) -> list[str]:
    """The default notifier's records of this run, in order: [(kind, text)]."""
    folder = artifacts(airflow, run_id) / "notifications"
    return [f.read_text() for f in sorted(folder.glob("*.md"))] if folder.exists() else []


def assert_notified(airflow, mailbox, run_id: str, outcome: str, *, gate: bool) -> None:
    """Once when the gate started waiting (if it did), once at the end, with the outcome; the
    same two by email."""
    records = notifications(airflow, run_id)
    expected = 2 if gate else 1
    assert len(records) == expected, records
    if gate:
        assert records[0].startswith("# Approval waiting: Apply 20251113203000")
        assert "/required_actions" in records[0] and "Answer by:" in records[0]
    assert records[-1].startswith(f"# Rollout 20251113203000: {outcome}")
    assert f"/rollout/runs/migration_rollout/{run_id}/" in records[-1]
    mails = [m["Subject"] for m in mailbox.for_run(run_id)]
    assert len(mails) == expected, mails
    assert mails[-1].startswith(f"Rollout 20251113203000: {outcome}")


def test_happy_path_then_a_rerun_is_a_no_op(airflow, e2e_targets, mailbox):
    targets = e2e_targets["happy"]
    run_id, state, states = run(airflow, conf("happy"))
    assert state == "success", explain(airflow, run_id, states)
    assert all(states[task] == "success" for task in [*STORY, "report"])
    assert states["rollback_staging"] == states["rollback_production"] == "skipped"
    assert migrated(targets["staging"]) and migrated(targets["production"])
    assert outcomes(targets["staging"]) == outcomes(targets["production"]) == ["applied"]
    assert_notified(airflow, mailbox, run_id, "succeeded", gate=True)
    assert "- staging: applied\n- production: applied" in notifications(airflow, run_id)[-1]

    folder = artifacts(airflow, run_id)
    for name in ["db-diff.txt", "drift-db-diff.txt", "summary.md", "summary.html",
                 "staging/validation/data-docs/index.html",
                 "staging/assignment/assignment-junit.xml",
                 "production/perf/perf-monitor.png", "production/perf/perf-monitor.md"]:  # fmt: skip
        assert (folder / name).is_file(), name
    assert "objects: 23 added, 4 removed, 1 changed" in (folder / "db-diff.txt").read_text()
    assert "# Rollout 20251113203000: succeeded" in (folder / "summary.md").read_text()
    approval = airflow.request(
        "GET", f"/api/v2/dags/migration_rollout/dagRuns/{run_id}/hitlDetails"
    ).json()["hitl_details"][0]
    assert approval["chosen_options"] == ["Approve"]
    assert approval["responded_by_user"]["name"] == "admin"
    assert "predicted lock on allocations" in approval["body"]
    page = f"/rollout/runs/migration_rollout/{run_id}/"
    assert page in approval["body"]

    # The artifacts in the UI: the run's page and its files, behind Airflow's auth.
    listing = airflow.request("GET", page)
    assert listing.status_code == 200 and "db-diff.txt" in listing.text
    # Each target's ledger, read-only, on the same page and on its own.
    assert "Ledger of production (p_happy)" in listing.text
    assert "20251113203000  applied" in listing.text and "matches" in listing.text
    ledger_page = airflow.request("GET", "/rollout/ledger/s_happy")
    assert ledger_page.status_code == 200 and run_id in ledger_page.text
    assert httpx.get(airflow.url + "/rollout/ledger/s_happy").status_code in (401, 403)
    assert "data-docs/index.html" in listing.text and "static/fonts" not in listing.text
    diff = airflow.request("GET", page + "files/db-diff.txt")
    assert diff.status_code == 200 and diff.text.startswith("db-diff: staging before")
    assert httpx.get(airflow.url + page).status_code in (401, 403)
    assert airflow.request("GET", page + "files/%2E%2E/%2E%2E/secret").status_code == 400
    links = airflow.request(
        "GET", f"/api/v2/dags/migration_rollout/dagRuns/{run_id}/taskInstances/preflight/links"
    ).json()
    assert links["extra_links"]["Rollout artifacts"].endswith(page)

    run_id, again, states = run(airflow, conf("happy"))
    assert again == "success", explain(airflow, run_id, states)
    assert outcomes(targets["staging"]) == outcomes(targets["production"]) == ["applied"]


def test_rejected_gate_leaves_production_untouched_and_rolls_staging_back(
    airflow, e2e_targets, mailbox
):
    targets = e2e_targets["reject"]
    run_id, state, states = run(airflow, conf("reject"), approve="Reject")
    assert state == "failed"
    assert states["approve_production"] == "failed"
    assert states["rollback_staging"] == "success"
    assert states["apply_production"] in ("upstream_failed", "skipped")
    assert not migrated(targets["production"]) and outcomes(targets["production"]) == []
    assert not migrated(targets["staging"])
    assert outcomes(targets["staging"]) == ["applied", "rolled_back"]
    summary = (artifacts(airflow, run_id) / "summary.md").read_text()
    assert (
        "not approved (rejected or timed out); production untouched, staging rolled back" in summary
    )


def test_validation_failure_on_staging_rolls_staging_back(airflow, e2e_targets, mailbox):
    targets = e2e_targets["bad_staging"]
    with db.connect(targets["staging"]) as conn:  # an event type the application never emits
        conn.execute("INSERT INTO capacity_outbox (event_type) VALUES ('capacity.unknown')")
    run_id, state, states = run(airflow, conf("bad_staging"))
    assert state == "failed"
    assert states["validate_staging"] == "failed" and states["rollback_staging"] == "success"
    assert not migrated(targets["staging"]) and not migrated(targets["production"])
    failure = (artifacts(airflow, run_id) / "failures" / "validate_staging.txt").read_text()
    assert "capacity_outbox" in failure
    assert_notified(airflow, mailbox, run_id, "failed on staging", gate=False)


def test_production_regression_rolls_production_back(airflow, e2e_targets, mailbox):
    targets = e2e_targets["regression"]
    run_id = airflow.trigger(conf("regression"))
    approve_when_asked(airflow, run_id)
    airflow.wait_for_task(run_id, "apply_production", ("success",))
    with db.connect(targets["production"]) as conn:
        # Something degrades production's plans between the baseline and the monitoring (here
        # the planner loses index scans for new sessions): the monitoring must catch it.
        name = conn.info.dbname
        conn.execute(f"ALTER DATABASE {name} SET enable_indexscan = off")
        conn.execute(f"ALTER DATABASE {name} SET enable_bitmapscan = off")
    state, states = follow_run(airflow, run_id, lambda _m: None, approve=None, timeout_s=300)
    assert state == "failed"
    assert states["monitor_production_perf"] == "failed"
    assert states["rollback_production"] == "success"
    assert not migrated(targets["production"])
    assert outcomes(targets["production"]) == ["applied", "rolled_back"]
    assert migrated(targets["staging"])  # staging keeps the approved change
    folder = artifacts(airflow, run_id)
    report = (folder / "production/perf/perf-monitor.md").read_text()
    assert "REGRESSION" in report and "**regressed**" in report
    assert (
        "objects: no differences"
        in (folder / "production/rollback/db-diff-after-rollback.txt").read_text()
    )


def approve_when_asked(airflow, run_id: str) -> None:
    airflow.wait_for_task(run_id, "approve_production", ("awaiting_input",))
    time.sleep(APPROVAL_GRACE_S)
    airflow.answer(run_id, "Approve")


def test_lock_contention_in_production_fails_cleanly(airflow, e2e_targets):
    targets = e2e_targets["contention"]
    with db.connect(targets["production"], autocommit=False) as holder:
        holder.execute("LOCK TABLE public.allocations IN ACCESS SHARE MODE")
        run_id, state, states = run(airflow, conf("contention", lock_timeout_ms=200))
        holder.rollback()
    assert state == "failed"
    assert states["apply_production"] == "failed"
    assert states["rollback_production"] == "skipped"  # nothing committed, nothing to undo
    assert not migrated(targets["production"]) and outcomes(targets["production"]) == ["failed"]
    failure = (artifacts(airflow, run_id) / "failures" / "apply_production.txt").read_text()
    assert "not granted" in failure and "unchanged" in failure


def test_bad_parameters_and_a_missing_connection_fail_before_any_change(airflow, e2e_targets):
    targets = e2e_targets["params"]
    refused = airflow.request(
        "POST", "/api/v2/dags/migration_rollout/dagRuns",
        json={"conf": conf("params", window_minutes=0), "logical_date": None},
    )  # fmt: skip
    assert refused.status_code == 400 and "window_minutes" in refused.text

    run_id, state, states = run(airflow, conf("params", window_timezone="Mars/Olympus"))
    assert state == "failed" and states["preflight"] == "failed"
    failure = (artifacts(airflow, run_id) / "failures" / "preflight.txt").read_text()
    assert "window_timezone" in failure

    run_id, state, states = run(airflow, conf("params", production_conn_id="missing_conn"))
    assert state == "failed" and states["preflight"] == "failed"
    failure = (artifacts(airflow, run_id) / "failures" / "preflight.txt").read_text()
    assert "'missing_conn' is not defined" in failure
    assert not migrated(targets["staging"]) and outcomes(targets["staging"]) == []


def test_no_answer_in_time_counts_as_a_rejection(airflow, e2e_targets, mailbox):
    targets = e2e_targets["timeout"]
    run_id, state, states = run(airflow, conf("timeout", approval_timeout_h=0.001), approve=None)
    assert state == "failed"
    assert states["approve_production"] == "failed" and states["rollback_staging"] == "success"
    assert not migrated(targets["production"]) and not migrated(targets["staging"])
    summary = (artifacts(airflow, run_id) / "summary.md").read_text()
    assert "not approved (rejected or timed out)" in summary
    assert_notified(airflow, mailbox, run_id, "not approved (rejected or timed out)", gate=True)


def test_a_passed_window_leaves_production_untouched(airflow, e2e_targets):
    targets = e2e_targets["window"]
    run_id, state, states = run(airflow, conf("window", window_start="2020-01-01 02:00"))
    assert state == "failed"
    assert states["wait_for_window"] == "failed"
    assert states["apply_production"] == "upstream_failed"
    assert not migrated(targets["production"]) and migrated(targets["staging"])
    failure = (artifacts(airflow, run_id) / "failures" / "wait_for_window.txt").read_text()
    assert "has passed" in failure and "production untouched" in failure


def test_a_rollback_blocked_by_data_fails_with_the_report_and_deletes_nothing(airflow, e2e_targets):
    targets = e2e_targets["blocked"]
    run_id = airflow.trigger(conf("blocked"))
    airflow.wait_for_task(run_id, "approve_production", ("awaiting_input",))
    with db.connect(targets["staging"]) as conn:
        # While the gate waits, the application books a hold over a confirmed table: legal
        # under the new constraint, fatal to the old one that a rollback restores.
        conn.execute(
            'INSERT INTO allocations (restaurant_id, resource_type, resource_id, "window", shadow) '
            'SELECT restaurant_id, resource_type, resource_id, "window", true '
            "FROM allocations WHERE NOT shadow LIMIT 1"
        )
        before = conn.execute("SELECT count(*) FROM allocations").fetchone()[0]
    time.sleep(APPROVAL_GRACE_S)
    airflow.answer(run_id, "Reject")
    state, states = follow_run(airflow, run_id, lambda _m: None, approve=None, timeout_s=300)
    assert state == "failed" and states["rollback_staging"] == "failed"
    folder = artifacts(airflow, run_id)
    assert len(json.loads((folder / "staging/rollback/down-conflicts.json").read_text())) == 1
    assert "nothing was deleted" in (folder / "failures/rollback_staging.txt").read_text()
    assert migrated(targets["staging"]) and outcomes(targets["staging"]) == ["applied", "refused"]
    with db.connect(targets["staging"]) as conn:
        assert conn.execute("SELECT count(*) FROM allocations").fetchone()[0] == before

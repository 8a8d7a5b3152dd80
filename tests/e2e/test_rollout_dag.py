"""The rollout DAG run by a real Airflow against real PostgreSQL, the approval answered through
the HITL REST API (the call the UI's Approve and Reject buttons make)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict

from rollout import cli, db
from rollout.airflow_paths import safe_run_id
from rollout.airflow_stack import APPROVER
from rollout.demo_rollout import follow_run
from rollout.errors import KILLED, RolloutError
from rollout.ledger import ADVISORY_LOCK_KEY
from rollout.ledger import history as ledger_history
from rollout.migrations import MigrationBundle, load_bundle
from rollout.schema import snapshot_schema
from rollout.workload import LiveApplication
from tests.e2e.conftest import LOSSY, NOTES, REFUSED, SLOW, UNKNOWN_EVENT, VERSION
from tests.factories import freeze_new_restaurants
from tests.target_state import bookings_columns, migrated, outcomes, wait_until_gone

pytestmark = pytest.mark.slow

STORY = [
    "preflight", "apply_staging", "validate_staging", "capture_db_diff", "run_assignment_tests",
    "check_window_and_budget", "approve_production", "wait_for_window", "baseline_production_perf", "apply_production",
    "validate_production", "monitor_production_perf",
]  # fmt: skip


def conf(scenario: str, **params) -> dict:
    return {"staging_conn_id": f"s_{scenario}", "production_conn_id": f"p_{scenario}",
            "monitor_period_s": 0, "lock_retries": 1, "retry_backoff_s": 0.5,
            "approvers": [APPROVER], "version": VERSION, **params}  # fmt: skip


def artifacts(airflow, run_id: str, dag_id: str = "migration_rollout") -> Path:
    return (
        Path(airflow.extra_env["ROLLOUT_ARTIFACTS_URL"].removeprefix("file://"))
        / dag_id
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


def test_a_live_production_migrated_once_and_never_undone_by_later_runs(
    airflow, e2e_targets, mailbox, bundles_dir
):
    """The application writes on production for the whole run, the gate's wait included: the
    rollout succeeds. Re-runs that find it done, are rejected, meet staging down, or meet an
    edited down.sql leave both targets migrated, and their summaries say why."""
    targets = e2e_targets["happy"]
    with LiveApplication(targets["production"]) as app:
        run_id, state, states = run(airflow, conf("happy", monitor_period_s=5))
    assert app.committed() > 20 and not app.bookings.stats.errors and not app.outbox.errors
    assert state == "success", explain(airflow, run_id, states)
    assert all(states[task] == "success" for task in [*STORY, "report"])
    assert states["rollback_staging"] == states["rollback_production"] == "skipped"
    assert migrated(targets["staging"]) and migrated(targets["production"])
    assert outcomes(targets["staging"]) == outcomes(targets["production"]) == ["applied"]
    assert_notified(airflow, mailbox, run_id, "succeeded", gate=True)
    assert (
        "- staging: applied by this run\n- production: applied by this run"
        in notifications(airflow, run_id)[-1]
    )
    summary = (artifacts(airflow, run_id) / "summary.md").read_text()
    assert f"**Approval**: Approve by {APPROVER} at" in summary
    validation = json.loads(
        (artifacts(airflow, run_id) / "production/validation/validation-report.json").read_text()
    )
    assert validation["success"] and any(
        c["name"].startswith("rows: the apply changed only") and c["passed"]
        for c in validation["catalog"]
    )
    first = run_id

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
    assert approval["responded_by_user"]["name"] == APPROVER
    assert "predicted lock on public.allocations" in approval["body"]
    page = f"/rollout/runs/migration_rollout/{run_id}/"
    assert page in approval["body"]

    # The artifacts in the UI: the run's review page and its files, behind Airflow's auth.
    listing = airflow.request("GET", page)
    assert listing.status_code == 200 and "db-diff.txt" in listing.text
    assert "<h2>Succeeded</h2>" in listing.text
    # Each target's ledger as the run left it, and now (the same: nothing changed it since);
    # on its own page too (only a target this run names; never the connection's host or user).
    assert "Ledger of production (p_happy)" in listing.text
    assert "<strong>20251113203000 applied by this run</strong>" in listing.text
    assert "Now: the same." in listing.text
    assert "host=" not in listing.text and "user=" not in listing.text
    ledger_page = airflow.request("GET", page + "ledgers/s_happy")
    assert ledger_page.status_code == 200 and run_id in ledger_page.text
    assert httpx.get(airflow.url + page + "ledgers/s_happy").status_code in (401, 403)
    assert airflow.request("GET", page + "ledgers/s_reject").status_code == 404
    assert airflow.request("GET", "/rollout/ledger/s_happy").status_code == 404  # route gone
    assert "data-docs/index.html" in listing.text and "static/fonts" not in listing.text
    diff = airflow.request("GET", page + "files/db-diff.txt")
    assert diff.status_code == 200 and diff.text.startswith("db-diff: staging before")
    assert diff.headers["x-content-type-options"] == "nosniff"
    docs = airflow.request("GET", page + "files/staging/validation/data-docs/index.html")
    assert docs.status_code == 200 and "sandbox" in docs.headers["content-security-policy"]
    assert httpx.get(airflow.url + page).status_code in (401, 403)
    assert airflow.request("GET", page + "files/%2E%2E/%2E%2E/secret").status_code == 404
    # The stack's passwords file, two levels above its artifacts: out of reach.
    up = f"/rollout/runs/%2E%2E/%2E%2E/files/{airflow.home.name}/passwords.json"
    assert airflow.request("GET", up).status_code == 404
    links = airflow.request(
        "GET", f"/api/v2/dags/migration_rollout/dagRuns/{run_id}/taskInstances/preflight/links"
    ).json()
    assert links["extra_links"]["Rollout artifacts"].endswith(page)

    # Applied on both: the re-run says so at preflight and asks nobody (issue 23).
    run_id, again, states = run(airflow, conf("happy"), approve=None)
    assert again == "success", explain(airflow, run_id, states)
    assert states["preflight"] == "skipped" and states["approve_production"] == "skipped"
    assert outcomes(targets["staging"]) == outcomes(targets["production"]) == ["applied"]

    # Staging rolled back by hand (to try it again there): a re-run applies staging and asks;
    # rejected, it undoes nothing of production, which the first run applied.
    down = cli.main(["migrate", "down", "--dsn", targets["staging"], "--applied-by", first])
    assert down == 0 and outcomes(targets["staging"]) == ["applied", "rolled_back"]
    run_id, state, states = run(airflow, conf("happy", on_reject="keep_staging"), approve="Reject")
    assert state == "failed" and states["apply_staging"] == "success"
    assert states["rollback_staging"] == "skipped"  # keep_staging: the approver's choice
    assert states["rollback_production"] in ("skipped", "upstream_failed")
    left = f"applied by run {first}, left as is"
    summary = (artifacts(airflow, run_id) / "summary.md").read_text()
    assert f"**production**: {left}" in summary
    assert f"**Approval**: Reject by {APPROVER}" in summary
    assert outcomes(targets["production"]) == ["applied"]
    assert outcomes(targets["staging"]) == ["applied", "rolled_back", "applied"]

    # Staging down: preflight fails; production, which an earlier run migrated, stays.
    staging_db = conninfo_to_dict(targets["staging"])["dbname"]
    with db.connect(targets["production"]) as conn:  # the same server
        conn.execute(f'ALTER DATABASE "{staging_db}" ALLOW_CONNECTIONS false')
    try:
        run_id, state, states = run(airflow, conf("happy"))
    finally:
        with db.connect(targets["production"]) as conn:
            conn.execute(f'ALTER DATABASE "{staging_db}" ALLOW_CONNECTIONS true')
    assert state == "failed" and states["preflight"] == "failed"
    assert states["rollback_production"] == "skipped"
    summary = (artifacts(airflow, run_id) / "summary.md").read_text()
    assert f"**production**: {left}" in summary
    assert "nothing to roll back: this run never applied it" in summary

    # down.sql edited after the apply: refused at preflight, and never executed anywhere.
    down = bundles_dir / load_bundle(VERSION).path.name / "down.sql"
    original = down.read_text()
    down.write_text(
        original.replace("BEGIN;", "BEGIN;\nCREATE TABLE public.edited_down_ran ();", 1)
    )
    try:
        run_id, state, states = run(airflow, conf("happy"))
    finally:
        down.write_text(original)
    assert state == "failed" and states["preflight"] == "failed"
    assert (
        "not the one the ledger recorded"
        in (artifacts(airflow, run_id) / "failures/preflight.txt").read_text()
    )
    assert outcomes(targets["production"]) == ["applied"]
    assert outcomes(targets["staging"]) == ["applied", "rolled_back", "applied"]
    for dsn in targets.values():
        assert migrated(dsn)
        with db.connect(dsn) as conn:
            assert (
                conn.execute("SELECT to_regclass('public.edited_down_ran')").fetchone()[0] is None
            )
            assert conn.execute("SELECT count(*) FROM rollout.lease").fetchone()[0] == 0


def test_the_next_migration_needs_only_its_bundle_folder(airflow, e2e_targets):
    """A second bundle, on bookings, after this one: its own lock prediction and gate text, no
    application tests, its rollback verified (rejected once), then applied; a third bundle is
    refused by its own preflight check and touches nothing."""
    targets = e2e_targets["happy"]  # migrated by the test before, or here when run alone
    if not migrated(targets["production"]):
        run_id, state, states = run(airflow, conf("happy"))
        assert state == "success", explain(airflow, run_id, states)

    run_id, state, states = run(airflow, conf("happy", version=NOTES), approve="Reject")
    assert state == "failed" and states["rollback_staging"] == "success", explain(
        airflow, run_id, states
    )
    gate = airflow.request(
        "GET", f"/api/v2/dags/migration_rollout/dagRuns/{run_id}/hitlDetails"
    ).json()["hitl_details"][0]
    assert "rows in public.bookings; predicted lock on public.bookings" in gate["body"]
    assert "allocations" not in gate["body"]
    assert (
        "Application tests on staging: none: the bundle names no application tests" in gate["body"]
    )
    folder = artifacts(airflow, run_id)
    assert (
        "objects: no differences"
        in (folder / "staging/rollback/db-diff-after-rollback.txt").read_text()
    )
    assert not (folder / "staging/assignment").exists()

    run_id, state, states = run(airflow, conf("happy", version=NOTES))
    assert state == "success", explain(airflow, run_id, states)
    for dsn in targets.values():
        assert bookings_columns(dsn, "notes") == {"notes"}
    assert "bookings" in (artifacts(airflow, run_id) / "db-diff.txt").read_text()

    before = {name: _schema(dsn) for name, dsn in targets.items()}
    run_id, state, states = run(airflow, conf("happy", version=REFUSED))
    assert state == "failed" and states["preflight"] == "failed"
    failure = (artifacts(airflow, run_id) / "failures/preflight.txt").read_text()
    assert "bookings are still pending: confirm or cancel them before this migration" in failure
    assert states["apply_staging"] == "upstream_failed"
    for name, dsn in targets.items():
        assert _schema(dsn) == before[name]
        with db.connect(dsn) as conn:
            assert not [r for r in ledger_history(conn) if r["version"] == REFUSED]


def _schema(dsn: str):
    with db.connect(dsn) as conn:
        return snapshot_schema(conn)


def test_production_goes_online_past_the_bound_while_the_application_writes(airflow, e2e_targets):
    """apply_mode auto with a tiny online_above_s: staging measures the locking apply, the
    approver is told production will run online and why, production is rebuilt beside the live
    table while the application writes, and the run succeeds."""
    targets = e2e_targets["online"]
    with LiveApplication(targets["production"]) as app:
        run_id, state, states = run(airflow, conf("online", online_above_s=0.001))
    assert app.committed() > 10 and not app.bookings.stats.errors
    assert state == "success", explain(airflow, run_id, states)
    gate = airflow.request(
        "GET", f"/api/v2/dags/migration_rollout/dagRuns/{run_id}/hitlDetails"
    ).json()["hitl_details"][0]
    # auto decides on staging's lock trace: the longest predicted ACCESS EXCLUSIVE hold.
    assert (
        "Apply mode in production: **online** (the longest predicted ACCESS EXCLUSIVE hold "
        "(public.allocations from `LOCK TABLE public.allocations IN ACCESS EXCLUSIVE MODE`)"
        in gate["body"]
    )
    assert "- Locks, statement by statement (measured on staging" in gate["body"]
    assert "exceeds online_above_s 0.001 s" in gate["body"] and "the copy needs" in gate["body"]
    # The migration role's own timeouts, read in a fresh production session, against the build.
    assert "Timeouts in production: the migration role's statement_timeout is" in gate["body"]
    assert "the online build (predicted" in gate["body"]
    modes = {}
    for name, dsn in targets.items():
        with db.connect(dsn) as conn:
            [row] = ledger_history(conn)
        modes[name] = row["session"]["apply_mode"]
    assert modes == {"staging": "locking", "production": "online"}
    assert migrated(targets["production"])


def test_a_migration_that_loses_a_row_on_a_live_production_is_caught(airflow, e2e_targets):
    """Its up deletes an allocation only production has (one the application marked for
    maintenance) while the application writes: refused inside its own transaction, the row
    kept, production unchanged; staging, where it deleted nothing, keeps the change."""
    targets = e2e_targets["lossy"]
    with db.connect(targets["production"]) as conn:
        victim = conn.execute(
            "UPDATE allocations SET is_maintenance = true"
            " WHERE id = (SELECT id FROM allocations WHERE NOT shadow LIMIT 1) RETURNING id"
        ).fetchone()[0]
    with LiveApplication(targets["production"]) as app:
        run_id, state, states = run(airflow, conf("lossy", version=LOSSY))
    assert app.committed() > 10
    assert state == "failed" and states["apply_production"] == "failed", explain(
        airflow, run_id, states
    )
    assert states["rollback_production"] == "skipped"
    failure = (artifacts(airflow, run_id) / "failures/apply_production.txt").read_text()
    assert "up.sql deleted 1 row(s) of public.allocations" in failure
    with db.connect(targets["production"]) as conn:
        assert conn.execute("SELECT 1 FROM allocations WHERE id = %s", (victim,)).fetchone()
    assert not migrated(targets["production"])
    assert outcomes(targets["production"]) == ["refused"]
    assert migrated(targets["staging"])


def test_two_dags_never_roll_out_to_one_target_at_once(airflow, e2e_targets):
    """While migration_rollout waits at its gate, fleet_rollout on the same targets is refused
    at preflight, naming the run that holds them."""
    first = airflow.trigger(conf("lease"))
    airflow.wait_for_task(first, "approve_production", ("awaiting_input",))
    second = airflow.trigger(
        {
            "staging_conn_id": "s_lease",
            "production_targets": ["p_lease"],
            "monitor_period_s": 0,
            "approvers": [APPROVER],
            "version": VERSION,
        },
        "fleet_rollout",
    )
    state, states = follow_run(
        airflow, second, lambda _m: None, approve=None, timeout_s=300, dag_id="fleet_rollout"
    )
    assert state == "failed" and states["preflight"] == "failed"
    refusal = (artifacts(airflow, second, "fleet_rollout") / "failures/preflight.txt").read_text()
    assert f"another rollout holds this database: run {first} of migration_rollout" in refusal
    airflow.answer_when_settled(first, "Reject")
    state, _ = follow_run(airflow, first, lambda _m: None, approve=None, timeout_s=300)
    assert state == "failed"
    for dsn in e2e_targets["lease"].values():
        with db.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM rollout.lease").fetchone()[0] == 0


def test_a_killed_apply_leaves_production_whole_and_a_rerun_converges(airflow, e2e_targets):
    """The apply's task process killed while it holds the allocations lock, then while it
    waits for it: each time production is as before, nothing of the step lives on, and a
    re-run applies it."""
    targets = e2e_targets["killed"]
    production = targets["production"]
    holding = conf("killed", version=SLOW)
    run_id = airflow.trigger(holding)
    approve_when_asked(airflow, run_id)
    pid = _apply_session(production, lambda row: row["wait_event"] == "PgSleep")
    os.kill(pid, signal.SIGKILL)
    state, states = follow_run(airflow, run_id, lambda _m: None, approve=None, timeout_s=300)
    assert state == "failed" and states["apply_production"] == "failed"
    assert states["rollback_production"] == "skipped"
    _assert_nothing_left(production)
    # Said where a person looks: killed, not a note about some older run's rollback; the
    # attempt in the ledger, written by the rollback since the dead process could not.
    folder = artifacts(airflow, run_id)
    assert not (folder / "failures/apply_production.txt").exists()
    note = (folder / "notes/rollback_production.txt").read_text()
    assert (
        "this run's apply was killed before it committed" in note and "rolled back at" not in note
    )
    assert f"| apply_production | failed | {KILLED} |" in (folder / "summary.md").read_text()
    page = airflow.request("GET", f"/rollout/runs/migration_rollout/{run_id}/").text
    assert KILLED in page
    with db.connect(production) as conn:
        killed = [r for r in ledger_history(conn) if r["run_id"] == run_id]
    assert [(r["direction"], r["outcome"]) for r in killed] == [("up", "failed")]
    assert killed[0]["detail"].startswith("killed: the apply's task process died")

    with db.connect(production, autocommit=False) as reader:
        reader.execute("SELECT count(*) FROM allocations")  # ACCESS SHARE until rollback
        run_id = airflow.trigger({**holding, "lock_timeout_ms": 120000, "lock_retries": 0})
        approve_when_asked(airflow, run_id)
        pid = _apply_session(production, lambda row: row["wait_event_type"] == "Lock")
        os.kill(pid, signal.SIGKILL)
        state, states = follow_run(airflow, run_id, lambda _m: None, approve=None, timeout_s=300)
        reader.rollback()
    assert state == "failed" and states["apply_production"] == "failed"
    _assert_nothing_left(production)

    run_id, state, states = run(airflow, holding)
    assert state == "success", explain(airflow, run_id, states)
    assert migrated(production) and outcomes(production)[-1] == "applied"


def _apply_session(dsn: str, ready, timeout_s: float = 120) -> int:
    """The pid of the production apply's task process, once its session is `ready`."""
    deadline = time.monotonic() + timeout_s
    with db.connect(dsn) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT application_name, wait_event_type, wait_event FROM pg_stat_activity"
                " WHERE application_name LIKE 'rollout-apply p%%' AND datname = current_database()"
            ).fetchall()
            for name, wait_type, wait in rows:
                if ready({"wait_event_type": wait_type, "wait_event": wait}):
                    return int(name.split()[1][1:])  # "rollout-apply p<pid> <run id>"
            time.sleep(0.2)
    raise AssertionError("the production apply never got there")


def _assert_nothing_left(dsn: str) -> None:
    assert not migrated(dsn)
    with db.connect(dsn) as conn:
        assert wait_until_gone(conn, "rollout-apply%"), "the killed apply's session lives on"
        assert conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()[0]
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def test_rejected_gate_leaves_production_untouched_and_rolls_staging_back(
    airflow, e2e_targets, mailbox, finished_runs
):
    targets = e2e_targets["reject"]
    # Four eyes: the admin who triggers may be named, but is never asked; their answer is refused.
    run_id = airflow.trigger(conf("reject", approvers=["admin", APPROVER]))
    airflow.wait_for_task(run_id, "approve_production", ("awaiting_input",))
    with pytest.raises(RolloutError, match=r"refused \(403\)"):
        airflow.answer_when_settled(run_id, "Approve", user="admin")
    gate = airflow.request(
        "GET", f"/api/v2/dags/migration_rollout/dagRuns/{run_id}/hitlDetails"
    ).json()["hitl_details"][0]
    assert [u["id"] for u in gate["assigned_users"]] == [APPROVER]
    assert f"Who may answer: {APPROVER} (not admin, who triggered this run)" in gate["body"]
    # Squawk's findings as the DAG's preflight kept them, each with its rule's link and note.
    assert (
        "**Lint**: Squawk (2.70.0): 8 finding(s) in up.sql and down.sql: 6 answered" in gate["body"]
    )
    assert (
        "[constraint-missing-not-valid](https://squawkhq.com/docs/constraint-missing-not-valid)"
        in gate["body"]
    )
    assert "(answered: an exclusion constraint cannot be added NOT VALID" in gate["body"]
    airflow.answer(run_id, "Reject")
    state, states = follow_run(airflow, run_id, lambda _m: None, approve=None, timeout_s=600)
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
    finished_runs["rejected"] = run_id  # read again by test_rollout_review.py


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


def make_run_failing_production_validation(airflow, scenario: str) -> str:
    """A run whose production validation fails (its bundle's up writes an outbox event type no
    consumer knows, on production only: the migration's doing, where a row already there would
    not fail it): production rolled back, staging keeps the approved change."""
    run_id, state, states = run(airflow, conf(scenario, version=UNKNOWN_EVENT))
    assert state == "failed" and states["validate_production"] == "failed", explain(
        airflow, run_id, states
    )
    return run_id


def test_a_failed_production_validation_rolls_production_back(airflow, e2e_targets, finished_runs):
    """The application books, confirms and writes its outbox on production through the whole
    run: the rollback gets through it, and no booking writer saw an error."""
    targets = e2e_targets["bad_production"]
    with LiveApplication(targets["production"]) as app:
        run_id = make_run_failing_production_validation(airflow, "bad_production")
    assert app.committed() > 20 and not app.bookings.stats.errors and not app.outbox.errors
    states = airflow.task_states(run_id)
    assert states["rollback_production"] == "success"
    assert states["monitor_production_perf"] == "upstream_failed"
    assert not migrated(targets["production"])
    assert outcomes(targets["production"]) == ["applied", "rolled_back"]
    assert migrated(targets["staging"])
    failure = (artifacts(airflow, run_id) / "failures/validate_production.txt").read_text()
    assert "capacity_outbox: outbox event types are ones the consumers know" in failure
    assert "passed before the apply" in failure  # the migration's doing, not production's past
    summary = (artifacts(airflow, run_id) / "summary.md").read_text()
    assert "rolled back in production after validate_production failed" in summary
    finished_runs["rolled back"] = run_id  # read again by test_rollout_review.py


def test_failing_assignment_tests_roll_staging_back(airflow, e2e_targets):
    """Staging behaves wrongly where only the application's own tests look: the tests fail,
    staging is rolled back, and their report names each failure (without the password the
    failing tests were given)."""
    targets = e2e_targets["bad_tests"]
    with db.connect(targets["staging"]) as conn:  # a trigger that refuses new restaurants
        freeze_new_restaurants(conn)
    run_id, state, states = run(airflow, conf("bad_tests"))
    assert state == "failed" and states["run_assignment_tests"] == "failed"
    assert states["rollback_staging"] == "success" and not migrated(targets["staging"])
    folder = artifacts(airflow, run_id) / "staging/assignment"
    assert "restaurants are frozen" in (folder / "assignment-output.txt").read_text()
    assert "FAILED" in (folder / "assignment-report.md").read_text()


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
    airflow.answer_when_settled(run_id, "Approve")


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

    run_id, state, states = run(airflow, conf("params", approvers=["admin"]))
    assert state == "failed" and states["preflight"] == "failed"
    failure = (artifacts(airflow, run_id) / "failures" / "preflight.txt").read_text()
    assert "approvers: only admin, who triggered this run, is named" in failure

    run_id, state, states = run(airflow, conf("params", window_timezone="Mars/Olympus"))
    assert state == "failed" and states["preflight"] == "failed"
    failure = (artifacts(airflow, run_id) / "failures" / "preflight.txt").read_text()
    assert "window_timezone" in failure

    # The report and the rollbacks still run: a summary, the reasons, the outcome notice.
    assert states["report"] == "failed" and states["rollback_staging"] == "skipped"
    folder = artifacts(airflow, run_id)
    assert "refused before any change" in (folder / "summary.md").read_text()
    assert (folder / "notifications/01-outcome.md").is_file()

    run_id, state, states = run(airflow, conf("params", production_conn_id="missing_conn"))
    assert state == "failed" and states["preflight"] == "failed"
    failure = (artifacts(airflow, run_id) / "failures" / "preflight.txt").read_text()
    assert "'missing_conn' is not defined" in failure
    assert states["rollback_staging"] == states["rollback_production"] == "skipped"
    summary = (artifacts(airflow, run_id) / "summary.md").read_text()
    assert (
        "**production**: unknown (the Airflow connection 'missing_conn' is not defined" in summary
    )
    assert (artifacts(airflow, run_id) / "notifications/01-outcome.md").is_file()
    assert not migrated(targets["staging"]) and outcomes(targets["staging"]) == []
    with db.connect(targets["staging"]) as conn:  # the lease preflight took is given back
        assert conn.execute("SELECT count(*) FROM rollout.lease").fetchone()[0] == 0


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
    # Refused before anyone is asked: the gate never opens, staging keeps the change.
    assert states["check_window_and_budget"] == "failed"
    assert states["approve_production"] == "upstream_failed"
    assert states["apply_production"] == "upstream_failed"
    assert states["rollback_staging"] == "skipped"
    assert not migrated(targets["production"]) and migrated(targets["staging"])
    failure = (artifacts(airflow, run_id) / "failures" / "check_window_and_budget.txt").read_text()
    assert "has passed" in failure and "nobody is asked to approve" in failure
    assert not airflow.request(
        "GET", f"/api/v2/dags/migration_rollout/dagRuns/{run_id}/hitlDetails"
    ).json()["hitl_details"]


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
    airflow.answer_when_settled(run_id, "Reject")
    state, states = follow_run(airflow, run_id, lambda _m: None, approve=None, timeout_s=300)
    assert state == "failed" and states["rollback_staging"] == "failed"
    folder = artifacts(airflow, run_id)
    assert len(json.loads((folder / "staging/rollback/down-conflicts.json").read_text())) == 1
    assert "nothing was deleted" in (folder / "failures/rollback_staging.txt").read_text()
    assert migrated(targets["staging"]) and outcomes(targets["staging"]) == ["applied", "refused"]
    with db.connect(targets["staging"]) as conn:
        assert conn.execute("SELECT count(*) FROM allocations").fetchone()[0] == before


# --- what exactly is approved -----------------------------------------------------------------


@contextlib.contextmanager
def bundle_of_its_own(bundles_dir: Path, folder: str) -> Iterator[Path]:
    """A copy of the NOTES bundle under a version of its own (older than every other, so no
    run asking for the newest sees it), in the stack's bundles folder while the test runs:
    a test may edit it without touching another test's bundle."""
    source = next(bundles_dir.glob(f"{NOTES}_*"))
    staged = bundles_dir.parent / f"staged-{folder}"
    shutil.copytree(source, staged)
    target = bundles_dir / folder
    staged.rename(target)  # whole: a task listing the bundles never sees half a folder
    try:
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_an_edit_after_approval_is_refused_in_production_and_shown(
    airflow, e2e_targets, bundles_dir
):
    """Issue 23: approved, then one statement appended to up.sql while the run went on to the
    window. Production's apply refuses, naming both checksums; production is untouched; the
    summary and the review page show the mismatch."""
    targets = e2e_targets["edited"]
    with bundle_of_its_own(bundles_dir, "20251001000003_edited_after_approval") as folder:
        run_id = airflow.trigger(conf("edited", version="20251001000003"))
        airflow.wait_for_task(run_id, "approve_production", ("awaiting_input",), timeout=600)
        up = folder / "up.sql"
        head, _, tail = up.read_text().rpartition("COMMIT;")
        up.write_text(
            f"{head}ALTER TABLE public.bookings ADD COLUMN edited_after_approval int;\n"
            f"COMMIT;{tail}"
        )
        edited = MigrationBundle("20251001000003", "edited_after_approval", folder).checksum
        airflow.answer_when_settled(run_id, "Approve")
        state, states = follow_run(airflow, run_id, lambda _m: None, approve=None, timeout_s=600)
    assert state == "failed" and states["apply_production"] == "failed", explain(
        airflow, run_id, states
    )
    folder = artifacts(airflow, run_id)
    approved = json.loads((folder / "run.json").read_text())["checksum"]
    assert approved != edited
    failure = (folder / "failures/apply_production.txt").read_text()
    assert approved[:12] in failure and edited[:12] in failure and "Trigger a new run" in failure
    # Production untouched: no ledger row of the version, neither the bundle's column nor the
    # edit's; staging has the bytes preflight read, not the edit.
    with db.connect(targets["production"]) as conn:
        assert not [r for r in ledger_history(conn) if r["version"] == "20251001000003"]
    assert bookings_columns(targets["production"], "notes", "edited_after_approval") == set()
    assert bookings_columns(targets["staging"], "notes", "edited_after_approval") == {"notes"}
    with db.connect(targets["staging"]) as conn:
        [row] = [r for r in ledger_history(conn) if r["version"] == "20251001000003"]
    assert row["checksum"] == approved
    # The gate's text named the checksum approved; the summary and the review page the mismatch.
    gate = airflow.request(
        "GET", f"/api/v2/dags/migration_rollout/dagRuns/{run_id}/hitlDetails"
    ).json()["hitl_details"][0]
    assert f"Bundle checksum: `{approved}`" in gate["body"]
    summary = (folder / "summary.md").read_text()
    assert f"`{edited[:12]}` on disk, not `{approved[:12]}`" in summary
    page = airflow.request("GET", f"/rollout/runs/migration_rollout/{run_id}/").text
    assert 'id="bundle-mismatch"' in page and "The bundle was edited after preflight" in page
    assert edited[:12] in page and approved[:12] in page


def test_a_second_trigger_of_an_applied_version_asks_nobody(airflow, e2e_targets, bundles_dir):
    """Issue 23: two triggers at once. The second waits behind max_active_runs; by then the
    version is applied on both targets: its preflight says so and the run ends there, nothing
    re-run, nobody asked (a gate would time out in 36 s and fail this test)."""
    targets = e2e_targets["twice"]
    with bundle_of_its_own(bundles_dir, "20251001000004_applied_twice"):
        params = conf("twice", version="20251001000004")
        first = airflow.trigger(params)
        second = airflow.trigger({**params, "approval_timeout_h": 0.01})
        state, states = follow_run(airflow, first, lambda _m: None, timeout_s=600)
        assert state == "success", explain(airflow, first, states)
        state, states = follow_run(airflow, second, lambda _m: None, approve=None, timeout_s=600)
    assert state == "success", explain(airflow, second, states)
    assert states["preflight"] == "skipped" and states["report"] == "success"
    assert all(states[t] == "skipped" for t in STORY[1:]), states
    assert not airflow.request(
        "GET", f"/api/v2/dags/migration_rollout/dagRuns/{second}/hitlDetails"
    ).json()["hitl_details"]
    folder = artifacts(airflow, second)
    note = (folder / "notes/preflight.txt").read_text()
    assert "is applied on every target already" in note and f"by run {first}" in note
    assert json.loads((folder / "outcome.json").read_text())["outcome"] == (
        "nothing to do: already applied on every target"
    )
    assert "# Rollout 20251001000004: nothing to do" in (folder / "summary.md").read_text()
    for dsn in targets.values():
        with db.connect(dsn) as conn:
            rows = [r for r in ledger_history(conn) if r["version"] == "20251001000004"]
        assert [(r["outcome"], r["run_id"]) for r in rows] == [("applied", first)]

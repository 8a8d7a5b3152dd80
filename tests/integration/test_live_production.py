"""The rollout's steps against a production the application keeps writing to, re-runs that did
not apply what they find, edited bundles, a long reader in the way, a killed step: real
PostgreSQL, the application's own writes (rollout.workload), no Airflow."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from rollout import db, ledger, report, steps
from rollout.errors import TargetUnavailable
from rollout.migrations import MigrationBundle, apply_up, load_bundle
from rollout.workload import (
    FIRST_SLOT,
    SLOT,
    BookingWriters,
    ChurnWriters,
    LiveApplication,
    LongReader,
)
from tests.target_state import ledger_rows, make_run, migrated

VERSION = "20251113203000"


def bundle_copy(tmp_path, edit=None, version: str = VERSION) -> MigrationBundle:
    """The real bundle copied (optionally as another version), then edited by `edit(folder)`."""
    source = load_bundle(VERSION)
    folder = tmp_path / "bundles" / f"{version}_{source.name}"
    shutil.copytree(source.path, folder)
    if edit:
        edit(folder)
    return MigrationBundle(version, source.name, folder)


# --- "nothing lost" on a live production ------------------------------------------------------


def test_live_writes_are_not_lost_rows_and_a_lost_row_is_caught(targets, tmp_path):
    """The application writes during the whole production apply and validation: a good
    migration passes; one that deletes an allocation is refused inside its own transaction,
    with the application still writing, and production keeps the row."""
    production = targets["production"]
    run, _ = make_run(targets, tmp_path)
    steps.preflight(run)
    with LiveApplication(production) as app:
        time.sleep(1)
        applied = steps.apply_target(run, "production")
        time.sleep(1)
        checked = steps.validate(run, "production")
    assert app.committed() > 10 and not app.bookings.stats.errors and not app.outbox.errors
    assert applied["row_effects"] == "no row of an existing table changed"
    assert checked["success"] and not checked["exact_row_counts"]
    assert "no row of an existing table changed" in checked["row_effects"]
    [row] = ledger_rows(production)
    assert row["row_effects"] == {"changed": {}, "dropped": []}

    # The same on a database of the same shape, with a bundle whose up deletes one allocation.
    def lose_one_allocation(folder):
        up = folder / "up.sql"
        up.write_text(
            up.read_text().replace(
                "CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;",
                "CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;\n"
                "DELETE FROM public.allocations WHERE id = (SELECT min(id::text)::uuid FROM public.allocations);",
            )
        )

    lossy = bundle_copy(tmp_path, lose_one_allocation, version="20251113203001")
    steps.release_leases(run)
    other = dict(targets, production=targets["staging"])  # not migrated yet, same data
    run, _ = make_run(other, tmp_path, run_id="run_lossy", bundle=lossy)
    with db.connect(other["production"]) as conn:
        victim = conn.execute("SELECT min(id::text)::uuid FROM public.allocations").fetchone()[0]
    with LiveApplication(other["production"]) as app:
        time.sleep(1)
        with pytest.raises(steps.StepFailed, match=r"deleted 1 row\(s\) of public\.allocations"):
            steps.apply_target(run, "production")
    assert app.committed() > 5
    with db.connect(other["production"]) as conn:
        assert conn.execute("SELECT 1 FROM allocations WHERE id = %s", (victim,)).fetchone()
    assert not migrated(other["production"])
    assert [r["outcome"] for r in ledger_rows(other["production"])] == ["refused"]


def test_staging_keeps_exact_row_counts_where_nobody_writes(targets, tmp_path):
    run, _ = make_run(targets, tmp_path)
    steps.preflight(run)
    steps.apply_target(run, "staging")
    with db.connect(targets["staging"]) as conn:  # a row nobody should have written
        conn.execute("INSERT INTO capacity_outbox (event_type) VALUES ('booking.created')")
    with pytest.raises(steps.StepFailed, match="capacity_outbox has as many rows as before"):
        steps.validate(run, "staging")
    writers, _ = make_run(targets, tmp_path, run_id="run_a", staging_has_writers=True)
    assert steps.validate(writers, "staging")["success"]


# --- run ownership ------------------------------------------------------------------------


def test_a_rollback_undoes_only_what_its_own_run_applied(targets, tmp_path):
    first, _ = make_run(targets, tmp_path, run_id="run_a")
    steps.preflight(first)
    steps.apply_target(first, "staging")
    steps.release_leases(first)

    second, _ = make_run(targets, tmp_path, run_id="run_b")
    steps.preflight(second)
    assert steps.apply_target(second, "staging")["noop"] is True
    result = steps.rollback_target(second, "staging")
    assert result["action"] == "not_owned" and result["applied_by"] == "run_a"
    assert migrated(targets["staging"])
    assert [r["outcome"] for r in ledger_rows(targets["staging"])] == ["applied"]
    assert "applied by run run_a, left as is" in report.target_story(second, "staging")
    assert report.target_story(first, "staging") == "applied by this run"


def test_a_rollback_of_a_target_never_touched_creates_nothing(targets, tmp_path):
    run, _ = make_run(targets, tmp_path)
    assert steps.rollback_target(run, "production")["action"] == "not_needed"
    with db.connect(targets["production"]) as conn:
        assert conn.execute("SELECT to_regnamespace('rollout')").fetchone()[0] is None


def test_an_edited_down_is_never_executed(targets, tmp_path):
    run, _ = make_run(targets, tmp_path)
    steps.preflight(run)
    steps.apply_target(run, "staging")

    def plant_marker(folder):
        down = folder / "down.sql"
        down.write_text(
            down.read_text().replace("BEGIN;", "BEGIN;\nCREATE TABLE public.edited_down_ran ();", 1)
        )

    # A run started from the edited folder (its own artifacts: the first run's keep the bytes
    # it applied, which its own rollback runs; tests/integration/test_approved_bundle.py).
    edited, _ = make_run(
        targets, tmp_path, bundle=bundle_copy(tmp_path, plant_marker), folder="run_a_edited"
    )
    with pytest.raises(ledger.ChecksumMismatch, match=r"an edited down\.sql is never executed"):
        steps.rollback_target(edited, "staging")
    with pytest.raises(ledger.ChecksumMismatch):
        steps.apply_target(edited, "staging")
    with db.connect(targets["staging"]) as conn:
        assert conn.execute("SELECT to_regclass('public.edited_down_ran')").fetchone()[0] is None
    assert migrated(targets["staging"])
    rows = ledger_rows(targets["staging"])
    assert [r["outcome"] for r in rows] == ["applied"]
    assert {r["checksum"] for r in rows} == {run.bundle.checksum}


# --- one rollout per target ---------------------------------------------------------------


def test_one_rollout_per_database_for_the_whole_run(targets, tmp_path):
    first, _ = make_run(targets, tmp_path, run_id="run_a")
    first.dag_id = "migration_rollout"
    steps.preflight(first)
    second, said = make_run(targets, tmp_path, run_id="run_b")
    second.dag_id = "fleet_rollout"
    with pytest.raises(ledger.TargetBusy, match=r"run run_a of migration_rollout .* release"):
        steps.preflight(second)
    with pytest.raises(ledger.TargetBusy, match="run_a"):
        steps.apply_target(second, "staging")
    assert not migrated(targets["staging"])

    # A lease whose run has ended (Airflow says so) is taken over, saying so.
    second.is_stale = lambda lease: "its run ended: failed" if lease.run_id == "run_a" else None
    steps.preflight(second)
    assert any("lease of run run_a" in line and "stale" in line for line in said)
    assert steps.release_leases(first) == []  # run_a holds nothing any more
    assert steps.release_leases(second) == ["staging", "production"]
    with db.connect(targets["staging"]) as conn:
        assert ledger.lease_holder(conn) is None


# --- the down: export and drop together, behind a long reader ----------------------------------


def test_export_and_drop_in_one_transaction_lose_no_confirmation(targets, tmp_path):
    staging = targets["staging"]
    run, _ = make_run(targets, tmp_path)
    steps.preflight(run)
    steps.apply_target(run, "staging")
    committed: list[str] = []
    stop = threading.Event()

    def cache_writer() -> None:
        """Writes confirmations into the cache until the table is gone; logs each commit."""
        with db.connect(staging) as conn:
            booking, restaurant = conn.execute(
                "SELECT id, restaurant_id FROM bookings LIMIT 1"
            ).fetchone()
            while not stop.is_set():
                key = uuid.uuid4().hex
                try:
                    conn.execute(
                        "INSERT INTO booking_confirmation_results (booking_id, hold_id,"
                        " restaurant_id, idempotency_key, table_ids, assignment_window) VALUES"
                        " (%s, gen_random_uuid(), %s, %s, '{}',"
                        " tstzrange(now(), now() + interval '1 hour'))",
                        (booking, restaurant, key),
                    )
                    committed.append(key)
                except Exception:
                    if conn.execute(
                        "SELECT to_regclass('booking_confirmation_results') IS NULL"
                    ).fetchone()[0]:
                        return
                time.sleep(0.01)

    writer = threading.Thread(target=cache_writer, daemon=True)
    writer.start()
    time.sleep(1)
    result = steps.rollback_target(run, "staging")
    stop.set()
    writer.join(timeout=30)
    assert result["action"] == "rolled_back"
    exported = (tmp_path / "run_a/staging/rollback/booking_confirmation_results.csv").read_text()
    assert len(committed) > 10
    assert all(key in exported for key in committed)  # every committed row was exported
    assert result["exported"] == {"public.booking_confirmation_results": len(committed)}
    down = ledger_rows(staging)[-1]
    assert (
        f"{len(committed)} rows of public.booking_confirmation_results exported" in down["detail"]
    )


def test_the_down_behind_a_long_reader_gives_way_to_writers_and_waits_bounded(targets, tmp_path):
    production = targets["production"]
    run, said = make_run(
        targets, tmp_path, lock_timeout_ms=200, lock_retries=12, retry_backoff_s=0.3
    )
    steps.preflight(run)
    steps.apply_target(run, "production")
    writers = BookingWriters(production, count=2, pause_s=0.05)
    writers.start()
    time.sleep(1)
    reader = LongReader(production, seconds=4)
    reader.start()  # a report holds allocations when the rollback asks for it
    result = steps.rollback_target(run, "production")
    reader.join()
    stats = writers.stop()
    # What happened, not how fast (a shared machine): the down gave way behind the report
    # attempt after attempt, then got through; the writers were never parked behind the whole
    # report (an attempt's wait is 200 ms; the report holds allocations 4 s).
    assert result["action"] == "rolled_back" and result["attempts"] >= 2
    attempts = [line for line in said if "down.sql" in line and "lock_timeout 200 ms" in line]
    assert len(attempts) >= 3 and any("retry in" in line for line in said)
    assert not stats.errors and stats.max_latency < reader.seconds, stats.max_latency
    assert not migrated(production)

    # A reader that outlasts every attempt: the down gives up, nothing changed.
    steps.apply_target(run, "production")
    patient, said = make_run(
        targets, tmp_path, lock_timeout_ms=100, lock_retries=2, retry_backoff_s=0.1
    )
    with db.connect(production, autocommit=False) as holder:
        holder.execute("LOCK TABLE public.allocations IN ACCESS SHARE MODE")
        with pytest.raises(steps.StepFailed, match=r"not granted within 100 ms in 3 attempts"):
            steps.rollback_target(patient, "production")
        holder.rollback()
    assert migrated(production)
    assert ledger_rows(production)[-1]["outcome"] == "failed"


# Each BookingWriters booking (run_key 0) lies in its own slot below this; other runs' beyond.
BOOKING_WRITER_SLOTS = 4 * 1_000_000
# Every booking of those slots and its real allocation: the rows the writers committed.
BOOKED_WITH_ALLOCATION = (
    "SELECT count(*) FROM public.bookings b JOIN public.allocations a"
    " ON a.booking_id = b.id AND NOT a.shadow WHERE b.start_at >= %s AND b.start_at < %s"
)


def test_the_rollback_gets_through_busy_writers_once_the_report_ends(targets, tmp_path):
    """Production rolled back while four writers book and confirm with no pause (nearly always
    half-way through a booking: bookings taken, allocations next), others move and cancel
    bookings, and a report holds allocations as the down starts. The down takes bookings before
    allocations, so it waits for the writers instead of deadlocking with each of them on every
    attempt: it gets through once the report has ended, the schema is the baseline's again, the
    ledger says rolled_back, and every row a writer committed is there."""
    production = targets["production"]
    run, said = make_run(targets, tmp_path, retry_backoff_s=0.5)
    steps.preflight(run)
    steps.apply_target(run, "production")
    writers = BookingWriters(production, count=4, pause_s=0.0)
    writers.start()
    with ChurnWriters(production) as churn:
        time.sleep(1)
        reader = LongReader(production, seconds=3)
        reader.start()
        result = steps.rollback_target(run, "production")  # verifies the schema is the before
        reader.join()
        time.sleep(0.5)  # the writers go on after the down
    stats = writers.stop()
    assert result["action"] == "rolled_back"
    assert result["attempts"] >= 2  # the first gave way behind the report...
    lost = [line for line in said if "gave way waiting for" in line]
    assert lost and all("public.allocations" in line for line in lost), lost  # ...and only it
    assert any("bench-long-reader" in line for line in said)  # the log names who held it
    assert not migrated(production)
    assert ledger_rows(production)[-1]["outcome"] == "rolled_back"
    assert len(stats.spans) > 50 and not stats.errors, stats.errors[:3]
    assert churn.total() > 10 and not churn.errors, churn.errors[:3]
    with db.connect(production) as conn:
        assert churn.check(conn) == []
        span = (FIRST_SLOT, FIRST_SLOT + BOOKING_WRITER_SLOTS * SLOT)
        assert conn.execute(BOOKED_WITH_ALLOCATION, span).fetchone()[0] == len(stats.spans)


# --- a killed step ------------------------------------------------------------------------

KILLED_STEP = textwrap.dedent(
    """
    import sys
    from rollout import ledger
    from rollout.artifacts import ArtifactDir
    from rollout.run import Run
    from rollout.settings import RolloutSettings
    from pathlib import Path

    run = Run(RolloutSettings.from_params({}), {"production": sys.argv[1]},
                    ArtifactDir(Path(sys.argv[2])), "run_killed")
    conn = run.connect("production", "apply")
    ledger.take_rollout_lock(conn, "production")
    conn.execute("BEGIN")
    print("waiting", flush=True)
    conn.execute("LOCK TABLE public.allocations IN ACCESS EXCLUSIVE MODE")
    """
)


def test_a_killed_step_leaves_no_session_no_lock_behind(targets, tmp_path):
    """Its process killed while its statement waits for a lock, the step's session ends within
    the client check interval, releasing the queued lock request and the rollout lock."""
    production = targets["production"]
    with db.connect(production, autocommit=False) as reader:
        reader.execute("SELECT count(*) FROM allocations")  # holds ACCESS SHARE until rollback
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_STEP, production, str(tmp_path / "killed")],
            stdout=subprocess.PIPE, text=True, env=os.environ,
        )  # fmt: skip
        assert child.stdout.readline().strip() == "waiting"
        time.sleep(1)
        with db.connect(production) as conn:
            assert _sessions(conn, "rollout-apply")
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 10
        with db.connect(production) as conn:
            while _sessions(conn, "rollout-apply") and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not _sessions(conn, "rollout-apply"), "the killed step's session lives on"
            assert conn.execute(
                "SELECT pg_try_advisory_lock(%s)", (ledger.ADVISORY_LOCK_KEY,)
            ).fetchone()[0]
        reader.rollback()


def _sessions(conn, prefix: str) -> list[str]:
    rows = conn.execute(
        "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s"
        " AND datname = current_database()",
        (f"{prefix}%",),
    ).fetchall()
    return [r[0] for r in rows]


def test_a_step_session_says_whose_it_is(targets, tmp_path):
    run, _ = make_run(targets, tmp_path, run_id="manual__2026-11-29T03:31:45.123456+00:00")
    with run.connect("production", "apply") as conn:
        name, interval = conn.execute(
            "SELECT current_setting('application_name'),"
            " current_setting('client_connection_check_interval')"
        ).fetchone()
    assert name.startswith(f"rollout-apply p{os.getpid()} manual__2026-11-29T03:31:45")
    assert interval == "2s"


def test_a_missing_connection_is_named_when_used(tmp_path, targets):
    from rollout.airflow_run import MissingTarget

    dsns = dict(targets, production=MissingTarget("the Airflow connection 'p_x' is not defined"))
    run, _ = make_run(dsns, tmp_path)
    with pytest.raises(TargetUnavailable, match="'p_x' is not defined"):
        steps.preflight(run)
    assert "p_x" in report.target_story(run, "production")


def test_the_plain_apply_uses_the_lock_retries_too(targets):
    """apply_up by itself (tests, benchmarks) goes through the same mechanism."""
    with db.connect(targets["staging"], autocommit=False) as holder:
        holder.execute("LOCK TABLE public.allocations IN ACCESS SHARE MODE")
        with db.connect(targets["staging"]) as conn:
            from rollout.lock_retries import LockNotGranted, LockRetries

            with pytest.raises(LockNotGranted, match="in 2 attempts"):
                apply_up(conn, load_bundle(VERSION), retries=LockRetries(50, 1, 0.05))
        holder.rollback()
    assert not migrated(targets["staging"])


WORKER = textwrap.dedent(
    """
    import subprocess, sys, time
    step = subprocess.Popen([sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
    print(step.pid, flush=True)
    time.sleep(600)
    """
)
APPLY_STEP = textwrap.dedent(
    """
    import dataclasses, sys
    from pathlib import Path
    from rollout import steps
    from rollout.artifacts import ArtifactDir
    from rollout.migrations import MigrationBundle
    from rollout.run import Run
    from rollout.settings import RolloutSettings

    settings = RolloutSettings.from_params({"lock_timeout_ms": 60000, "lock_retries": 0})
    folder = Path(sys.argv[3])
    bundle = MigrationBundle(folder.name[:14], folder.name[15:], folder)
    run = Run(dataclasses.replace(settings, bundle=bundle), {"production": sys.argv[1]},
                    ArtifactDir(Path(sys.argv[2])), "run_orphan", watch_worker=True)
    try:
        steps.apply_target(run, "production")
    except steps.StepFailed as exc:
        print(exc, file=sys.stderr)
        sys.exit(3)
    """
)


@pytest.mark.parametrize("when", ["waiting for the lock", "holding the lock"])
def test_a_step_whose_worker_dies_never_commits(targets, tmp_path, when):
    """Airflow loses a task whose worker (its parent process) dies; the step notices, cancels
    its statement and never commits, whether it waited for the lock or already held it."""
    production = targets["production"]

    def hold_the_lock_a_while(folder):
        up = folder / "up.sql"
        up.write_text(up.read_text().replace("\nCOMMIT;", "\nSELECT pg_sleep(30);\nCOMMIT;"))

    bundle = bundle_copy(tmp_path, hold_the_lock_a_while if when == "holding the lock" else None)
    reader = db.connect(production, autocommit=False)
    if when == "waiting for the lock":
        reader.execute("SELECT count(*) FROM allocations")  # ACCESS SHARE until rollback
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, APPLY_STEP, production, str(tmp_path / "orphan"),
         str(bundle.path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    step_pid = int(worker.stdout.readline())
    with db.connect(production) as conn:
        deadline = time.monotonic() + 30
        while not _sessions(conn, "rollout-apply") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)  # waiting, or inside the lock phase
        worker.kill()  # the worker dies; its step lives on as an orphan
        worker.wait()
        deadline = time.monotonic() + 15
        while _alive(step_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(step_pid), "the orphaned step went on"
        assert not _sessions(conn, "rollout-apply")
    reader.rollback()
    reader.close()
    assert not migrated(production)
    [row] = ledger_rows(production)
    assert row["outcome"] == "failed" and "worker died" in row["detail"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended its work
        return stat.read().split()[2] != "Z"


def test_the_online_apply_and_its_rollback_through_the_steps(targets, tmp_path):
    """apply_mode online through the same step as the DAG's, the application writing: the
    ledger says how it went, the rollback goes the same way, both verified."""
    production = targets["production"]
    run, _ = make_run(targets, tmp_path)
    steps.preflight(run)
    with LiveApplication(production) as app:
        time.sleep(1)
        applied = steps.apply_target(run, "production", mode="online")
        time.sleep(1)
        checked = steps.validate(run, "production")
    assert app.committed() > 10 and not app.bookings.stats.errors
    assert applied["apply_mode"] == "online" and applied["online"]
    assert checked["success"], checked["failures"]
    [row] = ledger_rows(production)
    assert row["session"]["apply_mode"] == "online" and row["detail"].startswith("online,")
    with LiveApplication(production) as app:
        result = steps.rollback_target(run, "production")
    assert result["action"] == "rolled_back" and result["apply_mode"] == "online"
    assert not migrated(production)
    assert (
        "objects: no differences"
        in (tmp_path / "run_a/production/rollback/db-diff-after-rollback.txt").read_text()
    )

"""The rollout behind a real PgBouncer (tests/pooler.py), with the application writing through
it: a transaction-mode pooler is told apart from a session even when quiet, and refused before
anything is set or changed; the session pooler carries a whole rollout and leaves nothing on
its server connections; each lock attempt's lock_timeout holds through the transaction pooler.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading

import pytest

from rollout import db, steps
from rollout.lock_retries import LockNotGranted, LockRetries, with_lock_retries
from rollout.pooler import (
    TransactionPoolerRefused,
    known_transaction_pooler,
    transaction_pooler_evidence,
)
from rollout.seed import seed_database
from rollout.workload import ChurnWriters
from tests.pooler import TRANSACTION_POOL_SIZE
from tests.target_state import make_run, migrated

# What a rollout may leave on a server connection: its advisory locks, its steps' session names
# (`rollout-<step> p<pid> <run>`).
ADVISORY_LOCKS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
ROLLOUT_SESSIONS = (
    "SELECT coalesce(string_agg(application_name, ', '), '') FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name LIKE 'rollout-%'"
)


@pytest.fixture
def seeded(make_database) -> str:
    dsn = make_database()
    with db.connect(dsn) as conn:
        seed_database(conn, 500, seed=3, anchor=dt.date(2026, 12, 1), progress=lambda m: None)
    return dsn


def observe(dsn: str, query: str):
    """One reading of the server's own views, on a direct connection of the test's own."""
    with db.connect(dsn, application_name="test-observer") as conn:
        return conn.execute(query).fetchone()[0]


def test_supabase_transaction_port_is_known_by_its_address():
    pooled = "postgresql://postgres.abcd@aws-0-eu-west-2.pooler.supabase.com:6543/postgres"
    session = "postgresql://postgres.abcd@aws-0-eu-west-2.pooler.supabase.com:5432/postgres"
    assert "transaction-mode pooler" in known_transaction_pooler(pooled)
    assert known_transaction_pooler(session) is None
    assert known_transaction_pooler("postgresql://postgres@db.abcd.supabase.co:6543/x") is None


def test_a_quiet_transaction_pooler_is_told_from_a_session(pgbouncer, fresh_db):
    """Nobody else uses the pool, so pg_backend_pid() alone would look like a session."""
    for mode, expected in (("direct", False), ("session", False), ("transaction", True)):
        dsn = fresh_db if mode == "direct" else pgbouncer.via(fresh_db, mode)
        with db.connect(dsn, application_name="", prepare_threshold=None) as conn:
            evidence = transaction_pooler_evidence(conn, dsn)
        assert (evidence is not None) == expected, (mode, evidence)


def test_a_rollout_through_the_transaction_pooler_is_refused_and_leaves_nothing(
    pgbouncer, seeded, tmp_path
):
    """Issue 23: `rollout migrate up` through PgBouncer left its advisory lock and its name on a
    pooled server connection. Now every step is refused there before anything is set, with the
    fix; the same rollout through the session pooler right after succeeds, while the
    application writes through the transaction pooler all along, and leaves nothing behind."""
    pooled = pgbouncer.via(seeded, "transaction")
    # More writers than the pool has server connections: they take turns, as in production.
    with ChurnWriters(pooled, count=TRANSACTION_POOL_SIZE + 1, run_key=1, pooled=True) as app:
        run, _said = make_run({"production": pooled}, tmp_path, run_id="pooled")
        for step in (steps.preflight_target, steps.apply_target):
            with pytest.raises(TransactionPoolerRefused, match="session pooler, port 5432"):
                step(run, "production")
        assert observe(seeded, "SELECT to_regnamespace('rollout') IS NULL")  # nothing created
        assert observe(seeded, ADVISORY_LOCKS) == 0
        assert observe(seeded, ROLLOUT_SESSIONS) == ""
        assert not migrated(seeded)

        session = pgbouncer.via(seeded, "session")
        run, said = make_run({"production": session}, tmp_path, run_id="session")
        steps.preflight_target(run, "production")
        result = steps.apply_target(run, "production")
        assert steps.release_leases(run, ["production"]) == ["production"]
        assert result["noop"] is False and migrated(seeded), said
        committed_during = app.total()
    assert not app.errors, app.errors[:3]
    assert committed_during > 0
    # The session pooler's server connections were reset as each client left (DISCARD ALL).
    assert observe(seeded, ADVISORY_LOCKS) == 0
    assert observe(seeded, ROLLOUT_SESSIONS) == ""
    with db.connect(seeded) as conn:
        assert app.check(conn) == []


def test_rollout_migrate_up_through_the_transaction_pooler_says_what_to_use(pgbouncer, seeded):
    """The command of issue 23, by hand: refused with the fix, exit status 2, nothing left."""
    done = subprocess.run(
        [sys.executable, "-m", "rollout", "migrate", "up", "--dsn",
         pgbouncer.via(seeded, "transaction")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "transaction-mode pooler" in done.stderr and "port 5432" in done.stderr
    assert "lease not released" not in done.stdout  # none was taken through it
    assert observe(seeded, "SELECT to_regnamespace('rollout') IS NULL")
    assert observe(seeded, ADVISORY_LOCKS) == 0
    assert observe(seeded, ROLLOUT_SESSIONS) == ""


def test_lock_timeout_holds_per_attempt_through_the_transaction_pooler(pgbouncer, seeded):
    """Each attempt's lock_timeout is set for its own transaction (set_config(…, true)): it holds
    on whichever server connection the attempt gets, gives way behind a reader, and is gone
    from every server connection of the pool afterwards."""
    pooled = pgbouncer.via(seeded, "transaction")
    said: list[str] = []
    with (
        ChurnWriters(pooled, count=TRANSACTION_POOL_SIZE + 1, run_key=2, pooled=True) as app,
        db.connect(seeded, application_name="test-reader") as reader,
        db.connect(pooled, application_name="", prepare_threshold=None) as conn,
    ):
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM allocations").fetchone()  # ACCESS SHARE, held
        with pytest.raises(LockNotGranted, match="not granted within 300 ms in 3 attempts"):
            with_lock_retries(
                conn,
                lambda c, _n: c.execute("LOCK TABLE allocations IN ACCESS EXCLUSIVE MODE"),
                LockRetries(lock_timeout_ms=300, retries=2, backoff_s=0.1, max_sleep_s=0.2),
                what="lock allocations",
                say=said.append,
            )
        reader.execute("ROLLBACK")
    assert not app.errors, app.errors[:3]
    gave_way = [line for line in said if "not granted within 300 ms" in line]
    assert len(gave_way) == 2, said  # the first two attempts; the third raised
    # Every server connection of the pool, each held by one client at once: the default again.
    barrier = threading.Barrier(TRANSACTION_POOL_SIZE)
    seen: list[tuple] = []

    def read_settings() -> None:
        with db.connect(pooled, application_name="", prepare_threshold=None) as client:
            with client.transaction():
                row = client.execute(
                    "SELECT pg_backend_pid(), current_setting('lock_timeout')"
                ).fetchone()
                barrier.wait(timeout=30)
            seen.append(tuple(row))

    readers = [threading.Thread(target=read_settings) for _ in range(TRANSACTION_POOL_SIZE)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join(timeout=60)
    assert len({pid for pid, _ in seen}) == TRANSACTION_POOL_SIZE
    assert {timeout for _, timeout in seen} == {"0"}

"""Role-level timeouts, as managed services set them on the migration role (`ALTER ROLE … SET
statement_timeout = '30s', idle_in_transaction_session_timeout = '10s'`), on a role made like
Supabase's `postgres`. Scaled down here (0.5 s and 0.2 s) so a wait of two seconds shows what
30 s would do to a 1M-row lock phase: each step sets its own bounds in its own transaction and
says so; whatever cuts a transaction, nothing is half-applied."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from rollout import db, steps
from rollout.baseline import apply_baseline
from rollout.dsn import parse_dsn
from rollout.migrations import load_bundle, run_script, split_lock_phase
from rollout.seed import seed_database
from rollout.timeouts import Bounds, RoleTimeouts
from tests.target_state import make_run, migrated, outcomes

BUNDLE = load_bundle("20251113203000")


@pytest.fixture
def role_target(pg_server, make_database) -> Iterator[tuple[str, str]]:
    """(the DSN of a seeded database owned by a Supabase-like migration role, the role); the
    role's defaults are the test's to set. Both are dropped after the test."""
    role = f"rollout_migrator_{uuid.uuid4().hex[:8]}"
    with db.connect(pg_server.admin_dsn) as admin:
        admin.execute(
            f"CREATE ROLE {role} NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS"
        )
    try:
        dsn = db.with_user(make_database(baseline=False, owner=role), role)
        with db.connect(dsn) as conn:
            apply_baseline(conn)
            seed_database(conn, 500, seed=3, anchor=dt.date(2026, 12, 1))
        yield dsn, role
        db.drop_database(pg_server.admin_dsn, parse_dsn(dsn)["dbname"])
    finally:
        with db.connect(pg_server.admin_dsn) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def _set_role_defaults(admin_dsn: str, role: str, statement: str, idle: str) -> None:
    with db.connect(admin_dsn) as admin:
        admin.execute(f"ALTER ROLE {role} SET statement_timeout = '{statement}'")
        admin.execute(f"ALTER ROLE {role} SET idle_in_transaction_session_timeout = '{idle}'")


def admin_on(pg_server, dsn: str) -> str:
    """The superuser on the same database (the reader is somebody else, not the role)."""
    return db.with_database(pg_server.admin_dsn, parse_dsn(dsn)["dbname"])


def _hold_allocations(dsn: str, seconds: float) -> threading.Thread:
    """A reader holds allocations (ACCESS SHARE) for `seconds`, as a long report would."""
    holder = db.connect(dsn, autocommit=False)
    holder.execute("SELECT count(*) FROM public.allocations")

    def release() -> None:
        time.sleep(seconds)
        holder.rollback()
        holder.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_the_apply_outlasts_the_roles_statement_timeout_and_says_why(
    pg_server, role_target, tmp_path
):
    dsn, role = role_target
    _set_role_defaults(pg_server.admin_dsn, role, "500ms", "200ms")
    with db.connect(dsn) as conn:  # a fresh session of the role gets its defaults
        assert RoleTimeouts.read(conn) == RoleTimeouts(0.5, 0.2)

    # Relying on the role's default, the lock phase's wait is cut: all of it rolled back.
    with db.connect(dsn) as conn:
        reader = _hold_allocations(admin_on(pg_server, dsn), 2.0)
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            run_script(conn, BUNDLE, "up")
        reader.join()
    assert not migrated(dsn)

    # The step sets its own bound (3x the lock budget: no prediction on staging) and says so.
    run, said = make_run(
        {"staging": dsn, "production": dsn}, tmp_path, lock_timeout_ms=10_000, lock_retries=0
    )
    reader = _hold_allocations(admin_on(pg_server, dsn), 2.0)
    applied = steps.apply_target(run, "staging")
    reader.join()
    assert applied["noop"] is False and migrated(dsn) and outcomes(dsn) == ["applied"]
    assert applied["lock_seconds"] >= 1.5  # it did wait out the reader, past the role's 0.5 s
    assert any(
        "statement_timeout 900 s for the lock phase" in line
        and "the role's default 0.5 s would cut it" in line
        and "idle_in_transaction_session_timeout 60 s (the role's default: 0.2 s)" in line
        for line in said
    ), said

    # The rollback sets its own too.
    rolled = steps.rollback_target(run, "staging")
    assert rolled["action"] == "rolled_back" and not migrated(dsn)
    assert any(line.startswith("rollback staging: statement_timeout 900 s") for line in said)


def test_an_idle_cut_between_statements_leaves_nothing_half_applied(pg_server, role_target):
    dsn, role = role_target
    _set_role_defaults(pg_server.admin_dsn, role, "30s", "200ms")
    _before, lock_phase = split_lock_phase(BUNDLE.body("up"))

    def busy_client(conn: psycopg.Connection) -> None:
        # The client busy between two statements of the transaction (an export being written,
        # a slow worker): the statements before the lock phase already ran.
        time.sleep(0.8)
        conn.execute(lock_phase.encode())

    with db.connect(dsn) as conn, pytest.raises(psycopg.Error):
        run_script(conn, BUNDLE, "up", lock_phase=busy_client)
    with db.connect(dsn) as conn:  # the cache table came before the lock phase: gone too
        assert conn.execute(
            "SELECT to_regclass('public.booking_confirmation_results') IS NULL"
        ).fetchone() == (True,)

    # With the step's own bounds in its transaction, the same pause passes.
    with db.connect(dsn) as conn:
        run_script(conn, BUNDLE, "up", lock_phase=busy_client, settings=Bounds(900).settings())
    assert migrated(dsn)


def test_the_gate_says_whether_the_predicted_lock_fits_the_roles_defaults(
    pg_server, role_target, tmp_path
):
    dsn, role = role_target
    _set_role_defaults(pg_server.admin_dsn, role, "30s", "10s")
    run, _ = make_run({"staging": dsn, "production": dsn}, tmp_path)

    facts, line = steps.role_timeouts_at_gate(
        run, 45.0, {"apply_mode": "locking", "window_lock_s": 45.0}
    )
    assert facts["statement_timeout_s"] == 30 and facts["idle_in_transaction_s"] == 10
    assert facts["predicted_phase_cut"] is True
    assert "the lock phase (predicted 45.0 s) would be cut by it" in line
    assert "the apply sets statement_timeout 135 s" in line

    facts, line = steps.role_timeouts_at_gate(
        run, 12.0, {"apply_mode": "online", "window_lock_s": 1.0}
    )
    assert facts["predicted_phase_cut"] is False
    assert "the online build (predicted 12.0 s) fits under it" in line
    assert "each build sets statement_timeout 14400 s, the swap 60 s" in line


def test_the_online_apply_sets_its_own_bounds_under_the_roles_defaults(
    pg_server, role_target, tmp_path
):
    """The online path (its many short transactions, the build, the swap, its rollback) runs
    under short role defaults and says what its build sets; 500 rows build in less than the
    role's 0.5 s, so this shows the bounds said and nothing cut, not a build outlasting it."""
    dsn, role = role_target
    _set_role_defaults(pg_server.admin_dsn, role, "500ms", "200ms")
    run, said = make_run({"staging": dsn, "production": dsn}, tmp_path, lock_retries=0)
    applied = steps.apply_target(run, "staging", mode="online")
    assert applied["apply_mode"] == "online" and migrated(dsn)
    assert any(
        "statement_timeout 14400 s for each build on the copy" in line
        and "the role's default 0.5 s would cut it" in line
        for line in said
    ), said
    rolled = steps.rollback_target(run, "staging")
    assert rolled["action"] == "rolled_back" and not migrated(dsn)

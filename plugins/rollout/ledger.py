"""The rollout ledger in each target (`rollout.ledger`): what was applied there, when, by which
run, with which checksum, and how long the lock was held."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from rollout.errors import RolloutError
from rollout.migrations import MigrationBundle
from rollout.paths import SQL_DIR, sql_text

LEDGER_DIR = SQL_DIR / "ledger"
# One key for every rollout on a database: two runs (from one Airflow or two) never overlap.
ADVISORY_LOCK_KEY = 0x524F4C4C  # "ROLL"


class ChecksumMismatch(RolloutError):
    """The bundle on disk is not the one the ledger says was applied."""


class TargetBusy(RolloutError):
    """Another rollout holds the database's rollout lock."""


@dataclass(frozen=True)
class VersionState:
    version: str
    applied: bool
    checksum: str | None  # of the last apply or rollback that committed
    run_id: str | None
    at: dt.datetime | None
    lock_s: float | None

    def describe(self) -> str:
        if self.at is None:
            return f"{self.version} has never been applied here"
        verb = "applied" if self.applied else "rolled back"
        return f"{self.version} {verb} at {self.at:%Y-%m-%d %H:%M:%S %Z} by run {self.run_id}"


def ensure_ledger(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute(sql_text(LEDGER_DIR / "schema.sql").encode())


def has_ledger(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('rollout.ledger') IS NOT NULL").fetchone()[0]


def history(conn: psycopg.Connection) -> list[dict[str, Any]]:
    if not has_ledger(conn):
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql_text(LEDGER_DIR / "history.sql").encode()).fetchall()


def version_state(conn: psycopg.Connection, version: str) -> VersionState:
    """Applied or not, by the last committed apply or rollback of that version."""
    committed = [
        row
        for row in history(conn)
        if row["version"] == version and row["outcome"] in ("applied", "rolled_back")
    ]
    if not committed:
        return VersionState(version, False, None, None, None, None)
    last = committed[-1]
    return VersionState(
        version,
        last["outcome"] == "applied",
        last["checksum"],
        last["run_id"],
        last["finished_at"],
        last["lock_s"],
    )


def require_matching_checksum(state: VersionState, bundle: MigrationBundle) -> None:
    if state.applied and state.checksum != bundle.checksum:
        raise ChecksumMismatch(
            f"the bundle {bundle.path.name} on disk (checksum {bundle.checksum[:12]}) is not the "
            f"one the ledger recorded ({(state.checksum or '')[:12]}, {state.describe()}). An "
            "applied migration must not be edited: restore it from version control, or put the "
            "change in a new bundle"
        )


def record(
    conn: psycopg.Connection,
    bundle: MigrationBundle,
    *,
    direction: str,
    outcome: str,
    run_id: str | None,
    actor: str | None,
    started_at: dt.datetime,
    duration_s: float | None = None,
    lock_s: float | None = None,
    detail: str | None = None,
    row_effects: dict[str, Any] | None = None,
    session: dict[str, Any] | None = None,
) -> int:
    """Insert one ledger row on conn, in whatever transaction conn is in."""
    return conn.execute(
        sql_text(LEDGER_DIR / "record.sql").encode(),
        {
            "version": bundle.version,
            "checksum": bundle.checksum,
            "direction": direction,
            "outcome": outcome,
            "run_id": run_id,
            "actor": actor,
            "started_at": started_at,
            "duration_s": duration_s,
            "lock_s": lock_s,
            "detail": detail,
            "row_effects": Jsonb(row_effects) if row_effects is not None else None,
            "session": Jsonb(session) if session is not None else None,
        },
    ).fetchone()[0]


def take_rollout_lock(conn: psycopg.Connection, target: str, wait_s: float = 0.0) -> None:
    """Hold the database's rollout lock for the life of this session, waiting up to `wait_s`
    (a killed step's session may take a few seconds to be noticed and end), else fail."""
    got = False
    if wait_s > 0:
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, true)", (f"{wait_s * 1000:.0f}ms",)
                )
                conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
                got = True
        except psycopg.errors.LockNotAvailable:
            got = False
    else:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()[0]
    if not got:
        holder = conn.execute(
            sql_text(LEDGER_DIR / "lock_holder.sql").encode(), {"key": ADVISORY_LOCK_KEY}
        ).fetchone()[0]
        raise TargetBusy(
            f"{target}: another rollout is working on this database ({holder}); wait for it to "
            "end, or end that session if it is stale"
        )


@dataclass(frozen=True)
class Lease:
    """Which run holds a database: one rollout at a time, for the whole run."""

    run_id: str
    dag_id: str | None
    target: str | None
    actor: str | None
    taken_at: dt.datetime

    def describe(self) -> str:
        by = f" of {self.dag_id}" if self.dag_id else ""
        who = f", triggered by {self.actor}" if self.actor else ""
        return f"run {self.run_id}{by} (since {self.taken_at:%Y-%m-%d %H:%M:%S %Z}{who})"


# Given the holder of a lease, why it is stale (its run has ended), or None when it may still
# be at work. Airflow tasks ask Airflow; elsewhere nothing is assumed stale.
StaleCheck = Callable[[Lease], str | None]


def lease_holder(conn: psycopg.Connection) -> Lease | None:
    """Who holds the database's lease; reads only (None without a ledger)."""
    if conn.execute("SELECT to_regclass('rollout.lease') IS NULL").fetchone()[0]:
        return None
    row = conn.execute(sql_text(LEDGER_DIR / "lease_holder.sql").encode()).fetchone()
    return Lease(*row) if row else None


def take_lease(
    conn: psycopg.Connection,
    *,
    run_id: str,
    dag_id: str | None,
    target: str,
    actor: str | None,
    is_stale: StaleCheck | None = None,
    say: Callable[[str], None] = lambda _message: None,
) -> Lease:
    """Hold the database for this run (kept when it holds it already); a lease of another run
    is taken over only when `is_stale` says that run has ended. Else TargetBusy, naming it."""
    ensure_ledger(conn)
    params = {"run_id": run_id, "dag_id": dag_id, "target": target, "actor": actor}
    for _ in range(2):
        with conn.transaction():
            holder = Lease(
                *conn.execute(sql_text(LEDGER_DIR / "take_lease.sql").encode(), params).fetchone()
            )
        if holder.run_id == run_id:
            return holder
        why = is_stale(holder) if is_stale else None
        if why is None:
            break
        say(f"{target}: the lease of {holder.describe()} is stale ({why}): released")
        release_lease(conn, holder.run_id)
    raise TargetBusy(
        f"{target}: another rollout holds this database: {holder.describe()}. One rollout per "
        "database at a time, whichever DAG runs it: wait for that run to end (its report releases "
        "the lease). If it has ended and left the lease behind, release it with `rollout lease "
        f"release --target <dsn or connection id> --run {holder.run_id}`"
    )


def release_lease(conn: psycopg.Connection, run_id: str) -> bool:
    """Give the database back, if `run_id` holds it; True when a lease was released."""
    if conn.execute("SELECT to_regclass('rollout.lease') IS NULL").fetchone()[0]:
        return False
    with conn.transaction():
        done = conn.execute("DELETE FROM rollout.lease WHERE run_id = %s", (run_id,)).rowcount
    return bool(done)

"""The rollout ledger in each target (`rollout.ledger`): what was applied there, when, by which
run, with which checksum, and how long the lock was held."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

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
        },
    ).fetchone()[0]


def take_rollout_lock(conn: psycopg.Connection, target: str) -> None:
    """Hold the database's rollout lock for the life of this session, or fail at once."""
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()[0]
    if not got:
        holder = conn.execute(
            sql_text(LEDGER_DIR / "lock_holder.sql").encode(), {"key": ADVISORY_LOCK_KEY}
        ).fetchone()[0]
        raise TargetBusy(
            f"{target}: another rollout is working on this database ({holder}); wait for it to "
            "end, or end that session if it is stale"
        )


def compatibility_problems(conn: psycopg.Connection) -> list[str]:
    """Functions that use allocations_no_overlap as an ON CONFLICT arbiter (they would break)."""
    rows = conn.execute(sql_text(SQL_DIR / "preflight" / "compatibility_scan.sql").encode())
    return [row[0] for row in rows.fetchall()]

"""Deterministic demo/test data: sql/seed/seed.sql, run step by step with progress."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from rollout.db import require_no_transaction
from rollout.errors import RolloutError
from rollout.paths import SEED_DIR, sql_text

log = logging.getLogger(__name__)

SEED_TABLES = (
    "restaurants", "zones", "table_inventory", "bookings", "table_holds", "table_hold_members",
    "booking_table_assignments", "booking_assignment_idempotency", "allocations", "capacity_outbox",
)  # fmt: skip


@dataclass(frozen=True)
class SeedResult:
    allocations: int
    seed: int
    anchor: dt.date
    seconds: float
    row_counts: dict[str, int] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)


def seed_steps() -> list[tuple[str, str]]:
    """(name, statements) for each `-- step:` section of seed.sql, in order."""
    parts = re.split(r"^-- step: (.+)$", sql_text(SEED_DIR / "seed.sql"), flags=re.MULTILINE)
    return [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts), 2)]


def seed_database(
    conn: psycopg.Connection,
    allocations: int,
    *,
    seed: int = 42,
    anchor: dt.date | None = None,
    progress: Callable[[str], None] = log.info,
) -> SeedResult:
    """Fill an empty baseline database with exactly `allocations` allocations, in one transaction."""
    if allocations < 1:
        raise RolloutError(f"allocations must be a positive number, got {allocations}")
    require_no_transaction(conn, "seed_database")
    anchor = anchor or dt.datetime.now(dt.UTC).date()
    if conn.execute("SELECT EXISTS (SELECT 1 FROM public.restaurants)").fetchone()[0]:
        raise RolloutError(
            "the database already holds restaurants: seed an empty baseline database "
            "(reset it first, e.g. `python -m rollout demo --reset`)"
        )
    started = time.perf_counter()
    step_seconds: dict[str, float] = {}

    def relay_notice(diag: psycopg.errors.Diagnostic) -> None:
        progress(f"seed: {diag.message_primary}")

    conn.add_notice_handler(relay_notice)
    try:
        with conn.transaction():
            for name, value in (("allocations", allocations), ("seed", seed), ("anchor", anchor)):
                conn.execute(
                    "SELECT set_config(%s, %s, true)", (f"rollout_seed.{name}", str(value))
                )
            steps = seed_steps()
            for index, (name, statements) in enumerate(steps, start=1):
                step_started = time.perf_counter()
                conn.execute(statements.encode())
                step_seconds[name] = time.perf_counter() - step_started
                progress(f"seed [{index}/{len(steps)}] {name}: {step_seconds[name]:.1f} s")
    finally:
        conn.remove_notice_handler(relay_notice)
    counts = table_row_counts(conn)
    if counts["allocations"] != allocations:
        raise RolloutError(f"seed made {counts['allocations']} allocations, not {allocations}")
    return SeedResult(
        allocations=allocations,
        seed=seed,
        anchor=anchor,
        seconds=time.perf_counter() - started,
        row_counts=counts,
        step_seconds=step_seconds,
    )


def table_row_counts(
    conn: psycopg.Connection, tables: tuple[str, ...] = SEED_TABLES
) -> dict[str, int]:
    query = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM public.{t}" for t in tables)
    return {name: count for name, count in conn.execute(query).fetchall()}

"""How long the up holds its lock on allocations, measured on one database and predicted for
another from row counts (staging's measurement sizes production's budget)."""

from __future__ import annotations

import math

import psycopg

from rollout.errors import RolloutError


def allocation_rows(conn: psycopg.Connection) -> int:
    """Rows in public.allocations: the planner's estimate when the table was analyzed (cheap on
    a big production table), else an exact count."""
    estimate = conn.execute(
        "SELECT reltuples::bigint FROM pg_class WHERE oid = 'public.allocations'::regclass"
    ).fetchone()[0]
    if estimate and estimate > 0:
        return int(estimate)
    return conn.execute("SELECT count(*) FROM public.allocations").fetchone()[0]


def predict_lock_seconds(measured_seconds: float, measured_rows: int, target_rows: int) -> float:
    """Scale a measured lock time to another row count.

    The lock phase is dominated by building the exclusion constraint: a GiST build plus one
    index probe per row, each probe a descent of a tree that deepens with the rows, so
    n·log n rather than n.
    """
    if measured_rows < 2 or target_rows < 0 or measured_seconds < 0:
        raise RolloutError(
            f"cannot predict from {measured_rows} measured rows and {measured_seconds:.3f} s: "
            "measure on a database with data (staging, seeded)"
        )
    if target_rows < 2:
        return 0.0
    scale = (target_rows * math.log(target_rows)) / (measured_rows * math.log(measured_rows))
    return measured_seconds * scale

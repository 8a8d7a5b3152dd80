"""How long the up holds its lock on allocations, measured on one database and predicted for
another from row counts (staging's measurement sizes production's budget)."""

from __future__ import annotations

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
    """Scale a measured lock time to another row count, linearly.

    Measured on the seed's data (benchmarks/README.md): 5.28 s at 100k rows, 52.06 s at 1M.
    Linear scaling predicts 52.8 s (+1.4 %); n·log n, the textbook shape of a GiST build plus
    one probe per row, predicts 63.4 s (+22 %).
    """
    if measured_rows < 1 or target_rows < 0 or measured_seconds < 0:
        raise RolloutError(
            f"cannot predict from {measured_rows} measured rows and {measured_seconds:.3f} s: "
            "measure on a database with data (staging, seeded)"
        )
    return measured_seconds * target_rows / measured_rows

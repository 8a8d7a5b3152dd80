"""How long a bundle's lock phase holds its strong locks, measured on one database and
predicted for another from the row counts of the tables it locks (its manifest's
`lock_tables`): staging's measurement sizes production's budget."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from rollout.errors import RolloutError


def locked_rows(conn: psycopg.Connection, tables: Sequence[str]) -> int:
    """Rows in the tables a lock phase locks: each table's planner estimate when it was
    analyzed (cheap on a big production table), else an exact count; a table that does not
    exist (yet) counts none."""
    total = 0
    for table in tables:
        found = conn.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", (table,)
        ).fetchone()
        if found is None:
            continue
        if found[0] and found[0] > 0:
            total += int(found[0])
        else:
            name = sql.Identifier(*table.split("."))
            total += conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()[0]
    return total


def describe_tables(tables: Sequence[str]) -> str:
    """For messages and the approval: the locked tables, or that there are none."""
    return ", ".join(tables) if tables else "no table (the bundle names none in lock_tables)"


def predict_lock_seconds(measured_seconds: float, measured_rows: int, target_rows: int) -> float:
    """Scale a measured lock time to another row count, linearly.

    Measured on the seed's data (benchmarks/README.md): 5.28 s at 100k rows, 52.06 s at 1M.
    Linear scaling predicts 52.8 s (+1.4 %); n·log n, the textbook shape of a GiST build plus
    one probe per row, predicts 63.4 s (+22 %).
    """
    if measured_rows == 0 and target_rows == 0 and measured_seconds >= 0:
        return measured_seconds  # no rows to scale by: the lock takes what it took
    if measured_rows < 1 or target_rows < 0 or measured_seconds < 0:
        raise RolloutError(
            f"cannot predict from {measured_rows} measured rows and {measured_seconds:.3f} s: "
            "measure on a database with data (staging, seeded)"
        )
    return measured_seconds * target_rows / measured_rows


# statement_timeout of a production apply: this many times the predicted lock, and at least
# STATEMENT_TIMEOUT_FLOOR_S, so a prediction a little low does not abort a healthy apply.
STATEMENT_TIMEOUT_FACTOR = 3.0


STATEMENT_TIMEOUT_FLOOR_S = 60.0


def production_statement_timeout(predicted_lock_s: float) -> float:
    return max(STATEMENT_TIMEOUT_FLOOR_S, predicted_lock_s * STATEMENT_TIMEOUT_FACTOR)


def predict_production_lock(staging_apply: dict, preflight_result: dict) -> float:
    """Staging's measured lock time scaled to production's row count."""
    return predict_target_lock(
        staging_apply,
        preflight_result["staging"]["locked_rows"],
        preflight_result["production"]["locked_rows"],
    )


def prediction_basis(staging_apply: dict, preflight_result: dict) -> dict:
    """What predict_production_lock scales, for a person to check: staging's measured lock and
    rows, production's rows (the largest target's, in a fleet)."""
    production = preflight_result["production"]
    return {
        "staging_lock_s": staging_apply.get("lock_seconds"),
        "staging_rows": staging_apply.get("locked_rows")
        or preflight_result["staging"]["locked_rows"],
        "production_rows": production["locked_rows"],
        "production_conn_id": production.get("conn_id"),
    }


def predict_target_lock(staging_apply: dict, staging_rows: int, target_rows: int) -> float:
    """Staging's measured lock time scaled to a target's row count (staging's rows as its apply
    counted them, else as preflight did)."""
    measured = staging_apply.get("lock_seconds")
    if measured is None:
        raise RolloutError("staging has no measured lock time (applied outside this tool?)")
    rows = staging_apply.get("locked_rows") or staging_rows
    return predict_lock_seconds(measured, max(rows, 1), target_rows)

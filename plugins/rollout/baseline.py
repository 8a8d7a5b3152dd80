"""The booking schema the migration runs on: sql/baseline/*.sql, applied in name order."""

from __future__ import annotations

from pathlib import Path

import psycopg

from rollout.db import require_no_transaction, run_sql_file
from rollout.paths import BASELINE_DIR


def baseline_files(directory: Path = BASELINE_DIR) -> list[Path]:
    return sorted(directory.glob("*.sql"))


def apply_baseline(conn: psycopg.Connection, directory: Path = BASELINE_DIR) -> None:
    """Create the baseline schema on an empty database, in one transaction."""
    require_no_transaction(conn, "apply_baseline")
    with conn.transaction():
        for path in baseline_files(directory):
            run_sql_file(conn, path)


def has_baseline(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('public.allocations') IS NOT NULL").fetchone()
    return bool(row and row[0])

"""What a test reads back from a target: is the migration there, and what its ledger says."""

from __future__ import annotations

from rollout import db, ledger


def migrated(dsn: str) -> bool:
    """The migration's cache table exists: the up is applied and not rolled back."""
    with db.connect(dsn) as conn:
        return conn.execute(
            "SELECT to_regclass('public.booking_confirmation_results') IS NOT NULL"
        ).fetchone()[0]


def outcomes(dsn: str) -> list[str]:
    """The ledger's outcomes, oldest first (applied, rolled_back, failed, refused)."""
    with db.connect(dsn) as conn:
        return [row["outcome"] for row in ledger.history(conn)]

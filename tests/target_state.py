"""What a test reads back from a target: is the migration there, and what its ledger says."""

from __future__ import annotations

from rollout import db, ledger


def migrated(dsn: str) -> bool:
    """The migration's cache table exists: the up is applied and not rolled back."""
    with db.connect(dsn) as conn:
        return conn.execute(
            "SELECT to_regclass('public.booking_confirmation_results') IS NOT NULL"
        ).fetchone()[0]


def bookings_columns(dsn: str, *names: str) -> set[str]:
    """Which of these columns public.bookings has (a bundle's edit added, or not)."""
    with db.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = 'bookings'"
            " AND column_name = ANY(%s)",
            (list(names),),
        ).fetchall()
    return {name for (name,) in rows}


def outcomes(dsn: str) -> list[str]:
    """The ledger's outcomes, oldest first (applied, rolled_back, failed, refused)."""
    with db.connect(dsn) as conn:
        return [row["outcome"] for row in ledger.history(conn)]


def ledger_rows(dsn: str) -> list[dict]:
    """Every ledger row, oldest first."""
    with db.connect(dsn) as conn:
        return ledger.history(conn)


def make_run(
    dsns: dict[str, str],
    tmp_path,
    run_id: str = "run_a",
    bundle=None,
    folder: str | None = None,
    **params,
):
    """(a Run of the steps as a test drives them, the lines it said): approvers named, its
    artifacts in tmp_path/<folder or run_id>, `bundle` in place of the settings' own."""
    import dataclasses

    from rollout.artifacts import ArtifactDir
    from rollout.run import Run
    from rollout.settings import RolloutSettings

    said: list[str] = []
    settings = RolloutSettings.from_params({"approvers": ["reviewer"], **params})
    if bundle is not None:
        settings = dataclasses.replace(settings, bundle=bundle)
    run = Run(
        settings=settings,
        dsns=dsns,
        artifacts=ArtifactDir(tmp_path / (folder or run_id)),
        run_id=run_id,
        actor="tester",
        progress=said.append,
    )
    return run, said


def wait_until_gone(conn, application_name_like: str, timeout_s: float = 15) -> bool:
    """Wait until no session of this database has such an application_name; whether none
    is left (a killed step's session ends within its client check interval)."""
    import time

    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name LIKE %s AND datname = current_database()"
    )
    deadline = time.monotonic() + timeout_s
    while conn.execute(query, (application_name_like,)).fetchone()[0]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True

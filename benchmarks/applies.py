"""The ways the benchmarks apply the migration, so each is written once.

- `seed_migration_sql()`: the seed's migration (the origin's constraint definition) with our
  up.sql's other statements: the naive baseline;
- `psql_file(sql)`: a script run the naive way, `psql -f`;
- `production_step(dsn)`: our production apply step, as the DAG runs it;
- `online_step(dsn)`: the online apply (rollout.online) with the DAG's default lock retries and
  the ledger row in the swap's transaction, as the step would run it with apply_mode "online";
- `timed_sql(dsn, file)`: one file of benchmarks/sql/ in a transaction that is rolled back.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rollout import ledger, steps
from rollout.artifacts import ArtifactDir
from rollout.clusters import client_binary
from rollout.migrations import LOCK_PHASE_MARKER, ApplyResult, ScriptRun, load_bundle
from rollout.online import apply_online
from rollout.paths import sql_text
from rollout.run import Run, connect_step
from rollout.settings import RolloutSettings

BENCH_SQL = Path(__file__).parent / "sql"


def seed_migration_sql() -> str:
    """The seed's migration: our up.sql with its constraint as the seed defines it (the same
    statements before the lock, one transaction)."""
    before_lock, _, _ = sql_text(load_bundle().up_path).partition(LOCK_PHASE_MARKER)
    return before_lock + sql_text(BENCH_SQL / "seed_constraint.sql") + "\nCOMMIT;\n"


def psql_file(sql: str) -> Callable[[str], None]:
    def apply(dsn: str) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".sql") as file:
            file.write(sql)
            file.flush()
            subprocess.run(
                [str(client_binary("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                 "-f", file.name, "-d", dsn],
                check=True, capture_output=True, text=True,
            )  # fmt: skip

    return apply


def _bench_run(dsn: str, out: str, params: dict[str, Any]) -> Run:
    return Run(
        settings=RolloutSettings.from_params(params),
        dsns={"production": dsn},
        artifacts=ArtifactDir(Path(out)),
        run_id="bench",
        actor="bench",
        progress=lambda message: None,
    )


def production_step(dsn: str, **params: Any) -> dict[str, Any]:
    """`rollout.steps.apply_target` on dsn as the production target, with the DAG's default
    settings unless params say otherwise; its result (lock_seconds, attempts, …)."""
    with tempfile.TemporaryDirectory() as out:
        return steps.apply_target(_bench_run(dsn, out, params), "production")


def rollback_step(dsn: str, **params: Any) -> dict[str, Any]:
    """`rollout.steps.rollback_target` on dsn as the production target (applied by
    `production_step`, the same run), with the DAG's default settings."""
    with tempfile.TemporaryDirectory() as out:
        run = _bench_run(dsn, out, params)
        try:
            return steps.rollback_target(run, "production")
        finally:
            steps.release_leases(run, ["production"])


def online_step(dsn: str, on_phase=lambda _phase: None, **params: Any) -> ApplyResult:
    """The online apply of the newest bundle's up on dsn, with the DAG's default lock retries
    (unless params say otherwise) and the ledger row written in the swap's transaction."""
    settings = RolloutSettings.from_params(params)
    bundle = load_bundle()
    started_at = dt.datetime.now(dt.UTC)

    def record(conn, done: ScriptRun) -> None:
        ledger.record(
            conn, bundle, direction="up", outcome="applied", run_id="bench", actor="bench",
            started_at=started_at, duration_s=done.seconds, lock_s=done.lock_seconds,
            row_effects=done.effects.to_json(), detail="online",
        )  # fmt: skip

    # As the step connects: a killed benchmark's session ends within the check interval,
    # and with it its build and its locks.
    with connect_step(dsn, "apply", "bench") as conn:
        return apply_online(
            conn, bundle, "up", retries=settings.lock_retries_policy, before_commit=record,
            on_phase=on_phase,
        )  # fmt: skip


def timed_sql(dsn: str, name: str) -> float:
    """Seconds to run benchmarks/sql/<name> in a transaction that is then rolled back."""
    with connect_step(dsn, "bench", "bench") as conn, conn.transaction(force_rollback=True):
        started = time.perf_counter()
        conn.execute(sql_text(BENCH_SQL / name).encode())
        elapsed = time.perf_counter() - started
    return elapsed

"""The two local databases of the demo: staging and production, each a separate cluster.

A target comes from ROLLOUT_<NAME>_DSN when set (any PostgreSQL 15+ server, used as given),
otherwise from an embedded cluster of that name with a database `booking` in it.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass

from rollout import db
from rollout.baseline import apply_baseline, has_baseline
from rollout.clusters import start_cluster
from rollout.dsn import check_dsn
from rollout.errors import RolloutError
from rollout.seed import seed_database, table_row_counts

TARGETS = ("staging", "production")
DEMO_DATABASE = "booking"
DEFAULT_ALLOCATIONS = 100_000


@dataclass(frozen=True)
class DemoTarget:
    name: str
    dsn: str
    embedded: bool
    allocations: int


def target_dsn_from_env(name: str) -> str | None:
    """ROLLOUT_<NAME>_DSN when set (MalformedDsn naming it when it does not parse), else None."""
    variable = f"ROLLOUT_{name.upper()}_DSN"
    given = os.environ.get(variable)
    return check_dsn(given, variable) if given else None


def prepare_target(
    name: str,
    *,
    allocations: int = DEFAULT_ALLOCATIONS,
    seed: int = 42,
    anchor: dt.date | None = None,
    reset: bool = False,
    progress: Callable[[str], None] = print,
) -> DemoTarget:
    """Start (or find) the target, give it the baseline and seed data unless it has them."""
    external = target_dsn_from_env(name)
    if external:
        if reset:
            raise RolloutError(
                f"--reset refused for {name}: it is ROLLOUT_{name.upper()}_DSN, a database this "
                "tool did not create; empty it yourself or unset the variable to use the embedded one"
            )
        dsn = external
    else:
        admin = start_cluster(name).dsn
        if reset:
            db.drop_database(admin, DEMO_DATABASE)
        if not db.database_exists(admin, DEMO_DATABASE):
            db.create_database(admin, DEMO_DATABASE)
        dsn = db.with_database(admin, DEMO_DATABASE)
        with db.connect(dsn) as conn:
            # As hosted Supabase has it, so the performance probes get the server's timings.
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    with db.connect(dsn) as conn:
        if not has_baseline(conn):
            progress(f"{name}: applying the baseline schema")
            apply_baseline(conn)
        existing = table_row_counts(conn, ("allocations",))["allocations"]
        if existing == 0:
            progress(f"{name}: seeding {allocations:,} allocations (seed {seed})")
            result = seed_database(
                conn,
                allocations,
                seed=seed,
                anchor=anchor,
                progress=lambda m: progress(f"{name}: {m}"),
            )
            existing = result.row_counts["allocations"]
            progress(f"{name}: seeded in {result.seconds:.1f} s")
        else:
            progress(f"{name}: already seeded ({existing:,} allocations); --reset starts over")
    return DemoTarget(name=name, dsn=dsn, embedded=not external, allocations=existing)


def prepare_fleet(
    count: int,
    *,
    allocations: int = DEFAULT_ALLOCATIONS,
    seed: int = 42,
    reset: bool = False,
    progress: Callable[[str], None] = print,
) -> list[DemoTarget]:
    """`count` production databases `fleet_1`… in the embedded production cluster, each a copy
    of the seeded production database (seeded once, copied in seconds)."""
    if target_dsn_from_env("production"):
        raise RolloutError(
            "the fleet demo makes its databases in the embedded production cluster: unset "
            "ROLLOUT_PRODUCTION_DSN, or name your own targets in fleet_rollout's trigger form"
        )
    source = prepare_target(
        "production", allocations=allocations, seed=seed, reset=reset, progress=progress
    )
    admin = start_cluster("production").dsn
    fleet = []
    for i in range(1, count + 1):
        name = f"fleet_{i}"
        if reset:
            db.drop_database(admin, name)
        if not db.database_exists(admin, name):
            db.create_database(admin, name, template=DEMO_DATABASE)
        fleet.append(DemoTarget(name, db.with_database(admin, name), True, source.allocations))
    progress(f"production fleet: {count} databases ({', '.join(t.name for t in fleet)})")
    return fleet

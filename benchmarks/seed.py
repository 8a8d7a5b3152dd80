"""Benchmark: seed N allocations into a baseline database, against its floor measured in the
same run, on the same server and the same rows.

    uv run python benchmarks/seed.py --allocations 1000000 [--dsn ADMIN_DSN]

The seeding measured is the one that makes the benchmarks' template database (scratch.py).
Its floor is what no seed of these rows into the baseline can avoid:
  (a) the bulk load: the seeded rows of every seeded table, copied out of the seeded database
      and loaded with COPY into a new empty baseline database whose indexes and constraints
      are set aside the way the seed sets them aside (in the seed's transaction settings);
  (b) the baseline's exclusion constraint built on those rows: the very statement the seed
      runs to put it back (same definition, DEFERRABLE INITIALLY DEFERRED), nothing else.
Goals (issue 20): the seed <= 1.3x its floor, with a progress line at least every 10 s.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from scratch import admin_dsn, benchmark_parser, scratch_database, seeded_template, server_label

from rollout import db
from rollout.baseline import apply_baseline
from rollout.seed import REBUILD_STEP, SEED_TABLES, SeedResult, seed_steps

GOAL_RATIO = 1.3
GOAL_QUIET_S = 10.0
EXCLUSION = "allocations_resource_window_excl"
CHUNK = 1 << 20


@dataclass(frozen=True)
class SeedFloor:
    copy_s: float  # (a) the seeded rows bulk loaded, indexes and constraints set aside
    constraint_s: float  # (b) the exclusion constraint built on them
    rows: int

    @property
    def seconds(self) -> float:
        return self.copy_s + self.constraint_s


@dataclass(frozen=True)
class SeedMeasurement:
    seed: SeedResult
    floor: SeedFloor

    @property
    def ratio(self) -> float:
        return self.seed.seconds / self.floor.seconds


def measure_seed(admin: str | None, allocations: int) -> SeedMeasurement:
    """The seed, then its floor on its rows: side by side, on one server."""
    admin = admin_dsn(admin)
    template, result = seeded_template(admin, allocations)
    return SeedMeasurement(result, measure_floor(admin, db.with_database(admin, template)))


def measure_floor(admin: str, seeded: str) -> SeedFloor:
    """(a) and (b) above for the rows of the database `seeded`, in a new database on `admin`'s
    server, in one transaction that is rolled back."""
    steps = dict(seed_steps())
    with tempfile.TemporaryDirectory(prefix="seed-floor-") as folder:
        files = copy_out(seeded, Path(folder))  # not timed: what is loaded is in files
        with scratch_database(admin) as dsn, db.connect(dsn) as conn:
            apply_baseline(conn)
            with conn.transaction(force_rollback=True):
                conn.execute(steps["settings"].encode())
                conn.execute(steps["set indexes and constraints aside"].encode())
                started = time.perf_counter()
                rows = copy_in(conn, files)
                copy_s = time.perf_counter() - started
                put_back = dict(conn.execute(steps[REBUILD_STEP].encode()).fetchall())
                started = time.perf_counter()
                conn.execute(put_back[EXCLUSION].encode())
                constraint_s = time.perf_counter() - started
    return SeedFloor(copy_s, constraint_s, rows)


def copy_out(dsn: str, folder: Path) -> dict[str, Path]:
    """Each seeded table's rows, in their physical order, as binary COPY data in a file."""
    files = {}
    with db.connect(dsn) as conn, conn.cursor() as cur:
        for table in SEED_TABLES:
            files[table] = folder / f"{table}.copy"
            query = sql.SQL("COPY public.{} TO STDOUT (FORMAT binary)").format(
                sql.Identifier(table)
            )
            with files[table].open("wb") as out, cur.copy(query) as copy:
                for data in copy:
                    out.write(data)
    return files


def copy_in(conn: psycopg.Connection, files: dict[str, Path]) -> int:
    """Load the files into their tables; the number of rows loaded."""
    rows = 0
    with conn.cursor() as cur:
        for table, path in files.items():
            query = sql.SQL("COPY public.{} FROM STDIN (FORMAT binary)").format(
                sql.Identifier(table)
            )
            with path.open("rb") as data, cur.copy(query) as copy:
                while chunk := data.read(CHUNK):
                    copy.write(chunk)
            rows += cur.rowcount
    return rows


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def seed_lines(measured: SeedMeasurement) -> list[str]:
    result, floor = measured.seed, measured.floor
    return [
        f"seed {result.allocations:,} allocations: {result.seconds:.1f} s, its floor "
        f"{floor.seconds:.1f} s: {measured.ratio:.2f}x "
        f"(goal <= {GOAL_RATIO}x: {verdict(measured.ratio <= GOAL_RATIO)})",
        f"  floor (a) the same {floor.rows:,} rows by COPY, indexes and constraints set aside: "
        f"{floor.copy_s:.1f} s",
        f"  floor (b) {EXCLUSION} built on them: {floor.constraint_s:.1f} s "
        f"(in the seed: {result.rebuild_seconds.get(EXCLUSION, float('nan')):.1f} s)",
        f"  longest without a progress line: {result.longest_quiet_s:.1f} s "
        f"(goal <= {GOAL_QUIET_S:.0f} s: {verdict(result.longest_quiet_s <= GOAL_QUIET_S)})",
        *(f"  {step:<40} {seconds:6.1f} s" for step, seconds in result.step_seconds.items()),
        *(
            f"    {name:<38} {seconds:6.1f} s"
            for name, seconds in result.rebuild_seconds.items()
            if seconds >= 0.5
        ),
    ]


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--allocations", type=int, default=1_000_000)
    args = parser.parse_args()
    measured = measure_seed(args.dsn, args.allocations)
    print(server_label(admin_dsn(args.dsn)))
    print("\n".join(seed_lines(measured)))


if __name__ == "__main__":
    main()

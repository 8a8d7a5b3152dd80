"""Benchmark: how long booking writers stall while the migration is applied, side by side.

    uv run python benchmarks/stall.py --allocations 1000000 [--dsn ADMIN_DSN] [--reader-s 20]

On identical clones of one seeded database, each with four writers booking and confirming
tables through the application's functions and one report transaction reading `allocations`
open when the apply starts, the migration is applied three ways:

1. `psql -f` of the seed's migration (the origin's constraint definition): the naive baseline;
2. `psql -f` of our up.sql (our key order, nothing else);
3. our production apply step (`rollout.steps.apply_target`: lock_timeout, retries with
   backoff, the ledger row in the transaction), with the DAG's default settings.

For each: the writers' max and p99 latency and the wall-clock time they were blocked.
Goal (issue 9): our worst stall <= 0.35 x the naive one, at 1M allocations.

The down the same way, on clones with the up applied: `psql -f down.sql` against our rollback
step (`rollout.steps.rollback_target`: the same lock retries, the cache exported in the down's
own transaction, the ledger row).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from applies import production_step, psql_file, rollback_step, seed_migration_sql
from scratch import admin_dsn, benchmark_parser, seeded_database, server_label

from rollout.migrations import load_bundle
from rollout.paths import sql_text
from rollout.workload import BookingWriters, LongReader, WriterStats

STALL_GOAL = 0.35


@dataclass(frozen=True)
class StallResult:
    how: str
    apply_seconds: float
    writers: WriterStats

    def row(self) -> str:
        w = self.writers
        return (
            f"| {self.how} | {self.apply_seconds:.1f} s | {w.max_latency:.2f} s | "
            f"{w.percentile(99):.2f} s | {w.blocked_seconds:.1f} s | {len(w.spans)} | "
            f"{len(w.errors)} |"
        )


def measure_stall(
    dsn: str, how: str, apply: Callable[[str], None], reader_s: float, warmup_s: float = 3.0
) -> StallResult:
    writers = BookingWriters(dsn)
    writers.start()
    time.sleep(warmup_s)
    reader = LongReader(dsn, reader_s)
    reader.start()
    time.sleep(min(1.0, reader_s / 4))  # the report is well into its transaction
    started = time.perf_counter()
    apply(dsn)
    applied = time.perf_counter() - started
    reader.join()
    time.sleep(warmup_s)
    return StallResult(how, applied, writers.stop())


def run_stall(admin: str | None, allocations: int, reader_s: float) -> list[StallResult]:
    ways = [
        ("psql -f, the seed's migration", psql_file(seed_migration_sql())),
        ("psql -f, our up.sql", psql_file(sql_text(load_bundle().up_path))),
        ("our production apply step", production_step),
    ]
    results = []
    for how, apply in ways:
        with seeded_database(admin, allocations) as dsn:
            results.append(measure_stall(dsn, how, apply, reader_s))
    return results


def run_down_stall(admin: str | None, allocations: int, reader_s: float) -> list[StallResult]:
    ways = [
        ("psql -f down.sql", psql_file(sql_text(load_bundle().down_path))),
        ("our rollback step", rollback_step),
    ]
    results = []
    for how, roll_back in ways:
        with seeded_database(admin, allocations) as dsn:
            production_step(dsn)  # the up first, by the same run the rollback step belongs to
            results.append(measure_stall(dsn, how, roll_back, reader_s))
    return results


def stall_table(results: list[StallResult]) -> list[str]:
    lines = [
        "| apply | wall time | writers' max latency | p99 | blocked | bookings | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(r.row() for r in results),
    ]
    naive, ours = results[0].writers.max_latency, results[-1].writers.max_latency
    ratio = ours / naive if naive else float("nan")
    verdict = "met" if ratio <= STALL_GOAL else "NOT met"
    lines.append(
        f"worst stall, ours / naive: {ours:.2f} s / {naive:.2f} s = {ratio:.2f} "
        f"(goal <= {STALL_GOAL}: {verdict})"
    )
    for r in results:
        for error in sorted(set(r.writers.errors))[:3]:
            lines.append(f"  writer error during {r.how}: {error}")
    return lines


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--allocations", type=int, default=1_000_000)
    parser.add_argument("--reader-s", type=float, default=20.0)
    args = parser.parse_args()
    results = run_stall(args.dsn, args.allocations, args.reader_s)
    print(
        f"{server_label(admin_dsn(args.dsn))}, {args.allocations:,} allocations, "
        f"reader {args.reader_s:g} s"
    )
    print("\n".join(stall_table(results)))
    print("\nThe down:")
    print("\n".join(stall_table(run_down_stall(args.dsn, args.allocations, args.reader_s))))


if __name__ == "__main__":
    main()

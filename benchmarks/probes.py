"""Benchmark: the application's allocation queries (the probes in sql/probes/) before and after
the migration, for the seed's constraint and for ours, side by side in one run: the comparison
the DAG's monitor_production_perf makes, on identical clones of one seeded database.

    uv run python benchmarks/probes.py --allocations 1000000 [--dsn ADMIN_DSN]

Goal (issue 9): no probe slower after our migration beyond the monitoring's threshold.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable

from applies import production_step, psql_file, seed_migration_sql
from scratch import admin_dsn, benchmark_parser, seeded_database, server_label

from rollout import probes

WAYS: dict[str, Callable[[], Callable[[str], object]]] = {
    "seed's key order": lambda: psql_file(seed_migration_sql()),
    "our key order": lambda: production_step,
}


def measure_probes(admin: str | None, allocations: int) -> dict[str, probes.PerfComparison]:
    """For each way of applying: the probes' baseline, the apply, the probes again."""
    results = {}
    for way, make_apply in WAYS.items():
        with seeded_database(admin, allocations) as dsn, tempfile.TemporaryDirectory() as out:
            before = probes.baseline(dsn, f"{out}/before")
            make_apply()(dsn)
            results[way] = probes.monitor(
                dsn, before, 0.0, probes.DEFAULT_THRESHOLD, f"{out}/after"
            )
    return results


def probe_table(results: dict[str, probes.PerfComparison]) -> list[str]:
    ways = list(results)
    lines = [
        "| probe | "
        + " | ".join(f"{w}: p50 before → after | p95 before → after" for w in ways)
        + " |",
        "|---|" + "---:|---:|" * len(ways),
    ]
    names = [p.probe for p in results[ways[0]].probes]
    for name in names:
        cells = []
        for way in ways:
            p = next(p for p in results[way].probes if p.probe == name)
            cells.append(
                f"{p.before.p50_ms:.2f} → {p.after.p50_ms:.2f} ms ({p.ratio_p50:.2f}x) | "
                f"{p.before.p95_ms:.2f} → {p.after.p95_ms:.2f} ms "
                f"({p.after.p95_ms / p.before.p95_ms:.2f}x)"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for way, comparison in results.items():
        verdict = "met" if comparison.ok else "NOT met"
        lines.append(f"{way}: {comparison.line()} (goal: no regression: {verdict})")
    return lines


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--allocations", type=int, default=1_000_000)
    args = parser.parse_args()
    results = measure_probes(args.dsn, args.allocations)
    print(f"{server_label(admin_dsn(args.dsn))}, {args.allocations:,} allocations")
    print("\n".join(probe_table(results)))


if __name__ == "__main__":
    main()

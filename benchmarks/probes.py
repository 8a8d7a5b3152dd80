"""Benchmark: the allocation query probes before and after the up, side by side in one run,
on one seeded scratch database (the comparison the DAG's monitoring makes in production).

    uv run python benchmarks/probes.py --allocations 1000000 [--dsn ADMIN_DSN]
"""

from __future__ import annotations

import datetime as dt
import tempfile

from scratch import benchmark_parser, scratch_database

from rollout import db, probes
from rollout.baseline import apply_baseline
from rollout.migrations import apply_up, load_bundle
from rollout.seed import seed_database


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--allocations", type=int, default=1_000_000)
    args = parser.parse_args()

    with scratch_database(args.dsn) as dsn, tempfile.TemporaryDirectory() as out:
        with db.connect(dsn) as conn:
            apply_baseline(conn)
            seed_database(conn, args.allocations, anchor=dt.date(2026, 12, 1))
        before = probes.baseline(dsn, f"{out}/before")
        with db.connect(dsn) as conn:
            lock = apply_up(conn, load_bundle()).lock_seconds
        comparison = probes.monitor(dsn, before, 0.0, probes.DEFAULT_THRESHOLD, f"{out}/after")

    print(f"{args.allocations:,} allocations; up held its lock {lock:.1f} s")
    print("| probe | p50 before | p50 after | ratio | plan after |")
    print("|---|---:|---:|---:|---|")
    for p in comparison.probes:
        print(
            f"| {p.probe} | {p.before.p50_ms:.2f} ms | {p.after.p50_ms:.2f} ms | "
            f"{p.ratio_p50:.1f}x | {'; '.join(p.plan_after)} |"
        )
    print(comparison.line())


if __name__ == "__main__":
    main()

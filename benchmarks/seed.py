"""Benchmark: seed N allocations into a scratch database; report the time per step.

uv run python benchmarks/seed.py --allocations 1000000            # embedded PostgreSQL 18
uv run python benchmarks/seed.py --allocations 1000000 --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import datetime as dt
import time

from scratch import benchmark_parser, scratch_database

from rollout import db
from rollout.baseline import apply_baseline
from rollout.seed import seed_database


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--allocations", type=int, default=1_000_000)
    parser.add_argument("--goal", type=float, default=60.0, help="seconds")
    args = parser.parse_args()

    with scratch_database(args.dsn) as dsn, db.connect(dsn) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        apply_baseline(conn)
        started = time.perf_counter()
        result = seed_database(conn, args.allocations, anchor=dt.date(2026, 12, 1), progress=print)
        elapsed = time.perf_counter() - started
    verdict = "met" if elapsed < args.goal else "NOT met"
    print(
        f"\nseed {args.allocations:,} allocations on PostgreSQL {version}: {elapsed:.1f} s "
        f"(goal < {args.goal:.0f} s: {verdict})"
    )
    for step, seconds in result.step_seconds.items():
        print(f"  {step:<40} {seconds:6.1f} s")


if __name__ == "__main__":
    main()

"""Benchmark: lock time of the up measured at two sizes, and the larger predicted from the
smaller (the way staging's measurement predicts production's).

    uv run python benchmarks/locktime.py --small 100000 --large 1000000 [--dsn ADMIN_DSN]
"""

from __future__ import annotations

import datetime as dt

from scratch import benchmark_parser, scratch_database

from rollout import db
from rollout.baseline import apply_baseline
from rollout.locktime import allocation_rows, predict_lock_seconds
from rollout.migrations import apply_up, load_bundle
from rollout.seed import seed_database


def measure(admin_dsn: str | None, allocations: int) -> tuple[int, float]:
    with scratch_database(admin_dsn) as dsn, db.connect(dsn) as conn:
        apply_baseline(conn)
        seed_database(conn, allocations, anchor=dt.date(2026, 12, 1), progress=lambda m: None)
        rows = allocation_rows(conn)
        return rows, apply_up(conn, load_bundle()).lock_seconds


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args()

    small_rows, small_s = measure(args.dsn, args.small)
    large_rows, large_s = measure(args.dsn, args.large)
    predicted = predict_lock_seconds(small_s, small_rows, large_rows)
    error = (predicted - large_s) / large_s
    print(
        f"lock held at {small_rows:,} rows: {small_s:.2f} s; at {large_rows:,} rows: {large_s:.2f} s"
    )
    print(
        f"predicted for {large_rows:,} from {small_rows:,}: {predicted:.2f} s, error {error:+.0%} (goal within ±25 %)"
    )


if __name__ == "__main__":
    main()

"""Benchmark: how long our production apply holds the lock on allocations, side by side with
the seed's constraint added bare and with a bare GiST index build (the floor), at two sizes;
and the larger size's lock time predicted from the smaller's, the way staging's measurement
predicts production's.

    uv run python benchmarks/locktime.py --small 100000 --large 1000000 [--dsn ADMIN_DSN]

Each size gets one clone of a seeded database. On it, in this order: the bare GiST index
(rolled back), the seed's `ALTER TABLE … ADD CONSTRAINT` (rolled back), then our production
apply step (committed; its lock phase as `apply_target` reports it).
Goals (issue 9): ours <= 0.45 x the seed's, <= 2.5 x the bare index; prediction within ±25 %.
"""

from __future__ import annotations

from dataclasses import dataclass

from applies import production_step, timed_sql
from scratch import admin_dsn, benchmark_parser, seeded_database, server_label

from rollout.locktime import predict_lock_seconds

SEED_GOAL = 0.45
FLOOR_GOAL = 2.5
PREDICTION_GOAL = 0.25


@dataclass(frozen=True)
class LockTimes:
    allocations: int
    rows: int  # as the apply step counted them (the planner's estimate)
    bare_index_s: float
    seed_constraint_s: float
    ours_s: float


def measure_lock_times(admin: str | None, allocations: int) -> LockTimes:
    with seeded_database(admin, allocations) as dsn:
        bare = timed_sql(dsn, "bare_gist_index.sql")
        seed = timed_sql(dsn, "seed_constraint.sql")
        ours = production_step(dsn)
    return LockTimes(allocations, ours["locked_rows"], bare, seed, ours["lock_seconds"])


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def lock_table(times: list[LockTimes]) -> list[str]:
    lines = [
        "| allocations | bare GiST index | seed's constraint, bare | our production apply | "
        f"ours / seed's (goal <= {SEED_GOAL}) | ours / bare index (goal <= {FLOOR_GOAL}) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for t in times:
        to_seed, to_floor = t.ours_s / t.seed_constraint_s, t.ours_s / t.bare_index_s
        lines.append(
            f"| {t.allocations:,} | {t.bare_index_s:.2f} s | {t.seed_constraint_s:.2f} s | "
            f"{t.ours_s:.2f} s | {to_seed:.2f} {_verdict(to_seed <= SEED_GOAL)} | "
            f"{to_floor:.2f} {_verdict(to_floor <= FLOOR_GOAL)} |"
        )
    return lines


def prediction_line(small: LockTimes, large: LockTimes) -> str:
    predicted = predict_lock_seconds(small.ours_s, small.rows, large.rows)
    error = (predicted - large.ours_s) / large.ours_s
    return (
        f"lock at {large.allocations:,} predicted from {small.allocations:,}: {predicted:.2f} s, "
        f"measured {large.ours_s:.2f} s, error {error:+.0%} "
        f"(goal within ±{PREDICTION_GOAL:.0%}: {_verdict(abs(error) <= PREDICTION_GOAL)})"
    )


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args()
    small = measure_lock_times(args.dsn, args.small)
    large = measure_lock_times(args.dsn, args.large)
    print(server_label(admin_dsn(args.dsn)))
    print("\n".join([*lock_table([small, large]), prediction_line(small, large)]))


if __name__ == "__main__":
    main()

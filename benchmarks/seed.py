"""Benchmark: seed N allocations into a baseline database; the time of each step.

    uv run python benchmarks/seed.py --allocations 1000000 [--dsn ADMIN_DSN]

The seeding measured is the one that makes the benchmarks' template database (scratch.py).
Goal (issue 9): < 30 s for 1M allocations.
"""

from __future__ import annotations

from scratch import admin_dsn, benchmark_parser, seeded_template, server_label

from rollout.seed import SeedResult

GOAL_S = 30.0


def measure_seed(admin: str | None, allocations: int) -> SeedResult:
    return seeded_template(admin_dsn(admin), allocations)[1]


def seed_lines(result: SeedResult) -> list[str]:
    verdict = "met" if result.seconds < GOAL_S else "NOT met"
    return [
        f"seed {result.allocations:,} allocations: {result.seconds:.1f} s "
        f"(goal < {GOAL_S:.0f} s: {verdict})",
        *(f"  {step:<40} {seconds:6.1f} s" for step, seconds in result.step_seconds.items()),
    ]


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--allocations", type=int, default=1_000_000)
    args = parser.parse_args()
    result = measure_seed(args.dsn, args.allocations)
    print(server_label(admin_dsn(args.dsn)))
    print("\n".join(seed_lines(result)))


if __name__ == "__main__":
    main()

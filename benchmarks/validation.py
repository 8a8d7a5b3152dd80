"""Benchmark: the post-migration validation (GX suite + catalog checks) on N allocations.

    uv run python benchmarks/validation.py --allocations 1000000 [--dsn ADMIN_DSN]

On a clone of a seeded database: row counts captured, the up applied, then validate_target
timed, and the peak memory of a child process that did only that (GX runs in-process).
Goals (issue 9): < 30 s and < 1 GiB at 1M allocations.
"""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
import time
from dataclasses import dataclass

from scratch import admin_dsn, benchmark_parser, seeded_database, server_label

from rollout.migrations import apply_up, load_bundle
from rollout.run import connect_step
from rollout.seed import table_row_counts
from rollout.validation import validate_target

GOAL_S = 30.0
GOAL_MIB = 1024.0


@dataclass(frozen=True)
class ValidationRun:
    seconds: float
    peak_mib: float
    success: bool


def _validate(dsn: str, version: str, counts: dict, results: multiprocessing.Queue) -> None:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        report = validate_target(dsn, version, "post_migration", out, row_counts=counts)
        elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.put(ValidationRun(elapsed, peak_mib, report.success))


def measure_validation(admin: str | None, allocations: int) -> ValidationRun:
    with seeded_database(admin, allocations) as dsn:
        bundle = load_bundle()
        with connect_step(dsn, "apply", "bench") as conn:  # as the apply step connects
            counts = table_row_counts(conn)
            apply_up(conn, bundle)
        # A fresh process, so its peak memory is the validation's, not this process's.
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        child = context.Process(target=_validate, args=(dsn, bundle.version, counts, results))
        child.start()
        run = results.get(timeout=1800)
        child.join()
    return run


def validation_lines(run: ValidationRun) -> list[str]:
    verdict = "met" if run.seconds < GOAL_S and run.peak_mib < GOAL_MIB else "NOT met"
    return [
        f"validation: {run.seconds:.1f} s (goal < {GOAL_S:.0f} s), peak memory "
        f"{run.peak_mib:.0f} MiB (goal < {GOAL_MIB:.0f} MiB): {verdict}; suite passed: {run.success}"
    ]


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--allocations", type=int, default=1_000_000)
    args = parser.parse_args()
    run = measure_validation(args.dsn, args.allocations)
    print(f"{server_label(admin_dsn(args.dsn))}, {args.allocations:,} allocations")
    print("\n".join(validation_lines(run)))


if __name__ == "__main__":
    main()

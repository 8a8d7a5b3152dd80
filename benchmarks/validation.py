"""Benchmark: the post-migration validation (GX suite + catalog checks) on N allocations.

    uv run python benchmarks/validation.py --allocations 1000000 [--dsn ADMIN_DSN]

Seeds a scratch database, captures row counts, applies the up, then times validate_target
and reports the process's peak memory (GX runs in-process). The database is dropped after.
"""

from __future__ import annotations

import datetime as dt
import resource
import tempfile
import time

from scratch import benchmark_parser, scratch_database

from rollout import db
from rollout.baseline import apply_baseline
from rollout.migrations import apply_up, load_bundle
from rollout.seed import seed_database, table_row_counts
from rollout.validation import row_count_parameters, validate_target


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--allocations", type=int, default=1_000_000)
    args = parser.parse_args()

    with scratch_database(args.dsn) as dsn:
        with db.connect(dsn) as conn:
            apply_baseline(conn)
            seed_database(
                conn, args.allocations, anchor=dt.date(2026, 12, 1), progress=lambda m: None
            )
            counts = row_count_parameters(table_row_counts(conn))
            bundle = load_bundle()
            apply_up(conn, bundle)
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            report = validate_target(dsn, bundle.version, "post_migration", out, counts)
            elapsed = time.perf_counter() - started
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"validation of {args.allocations:,} allocations: {elapsed:.1f} s (goal < 30 s), "
        f"peak memory {peak_mib:.0f} MiB (goal < 1024 MiB), success={report.success}"
    )


if __name__ == "__main__":
    main()

"""Benchmark: the per-statement lock trace (issue 25). Staging's traced apply at the smaller
size predicts each statement's time at the larger size (production) from its tables' rows; the
larger size's own traced apply measures it, statement by statement. And what tracing costs: the
apply's transaction with and without the trace, side by side on clones of the same data.

    uv run python benchmarks/lock_trace.py --small 100000 --large 1000000 [--dsn ADMIN_DSN]

The apply is the runner's transaction as apply_target runs it (rollout.migrations.run_script,
the bundle's up with its lock_tables locked first), committed on a clone of a seeded database.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from scratch import admin_dsn, benchmark_parser, seeded_database, server_label

from rollout.locktrace import LockTrace, statement_label
from rollout.migrations import load_bundle, run_script
from rollout.run import connect_step
from rollout.seed import table_row_counts

PREDICTION_GOAL = 0.25  # the lock phase's prediction goal (issue 9), per statement here


@dataclass(frozen=True)
class Applied:
    seconds: float  # the whole transaction
    lock_seconds: float  # from the lock phase to COMMIT
    trace: dict[str, Any] | None


def apply_once(dsn: str, traced: bool, production_rows: dict[str, int] | None = None) -> Applied:
    """The newest bundle's up on dsn through the runner, traced or not."""
    bundle = load_bundle()
    with connect_step(dsn, "apply", "bench") as conn:
        trace = None
        if traced:
            trace = LockTrace(table_row_counts(conn), production_rows or {})
        started = time.perf_counter()
        result = run_script(conn, bundle, "up", trace=trace)
        seconds = time.perf_counter() - started
    return Applied(
        seconds, result.lock_seconds, trace.to_json("bench", "locking") if trace else None
    )


def rows_of(dsn: str) -> dict[str, int]:
    with connect_step(dsn, "bench", "bench") as conn:
        return table_row_counts(conn)


@dataclass(frozen=True)
class TraceBench:
    small: int
    large: int
    predicted: dict[str, Any]  # the small size's trace, predicting the large size
    measured: dict[str, Any]  # the large size's own trace
    pairs: list[tuple[Applied, Applied]]  # (untraced, traced) at the small size, alternating


def measure_trace(admin: str | None, small: int, large: int, pairs: int = 3) -> TraceBench:
    """`pairs` untraced and traced applies at the small size, alternating on fresh clones (one
    apply alone is as noisy as the cost it would measure); the last traced one predicts."""
    with seeded_database(admin, large) as large_dsn:
        large_rows = rows_of(large_dsn)
        measured_pairs = []
        for _ in range(pairs):
            with seeded_database(admin, small) as plain, seeded_database(admin, small) as traced:
                untraced_apply = apply_once(plain, traced=False)
                traced_apply = apply_once(traced, traced=True, production_rows=large_rows)
            measured_pairs.append((untraced_apply, traced_apply))
        measured = apply_once(large_dsn, traced=True, production_rows=large_rows)
    predicting = measured_pairs[-1][1].trace
    assert predicting is not None and measured.trace is not None
    return TraceBench(small, large, predicting, measured.trace, measured_pairs)


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def trace_lines(bench: TraceBench, min_seconds: float = 0.05) -> list[str]:
    """Each statement's predicted time at the larger size beside its measured one; the
    statements that took under `min_seconds` at both sizes summed in one line, except the
    longest at the larger size, which always has its row (the smoke's scale puts even the
    constraint near `min_seconds`, and the table must not change shape with the machine's
    speed). Then the cost."""
    lines = [
        f"| # | statement | rows {bench.small:,} → {bench.large:,} | measured at "
        f"{bench.small:,} | predicted at {bench.large:,} | measured at {bench.large:,} | error |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    short = {"count": 0, "predicted": 0.0, "measured": 0.0}
    pairs = list(zip(bench.predicted["statements"], bench.measured["statements"], strict=True))
    longest = max(range(len(pairs)), key=lambda k: pairs[k][1]["seconds"], default=-1)
    for k, (ahead, actual) in enumerate(pairs):
        predicted, measured = ahead["predicted_s"] or 0.0, actual["seconds"]
        if k != longest and max(ahead["seconds"], measured) < min_seconds:
            short["count"] += 1
            short["predicted"] += predicted
            short["measured"] += measured
            continue
        rows_small = sum(ahead["staging_rows"].values())
        rows_large = sum(v or 0 for v in ahead["production_rows"].values())
        error = (predicted - measured) / measured if measured else 0.0
        lines.append(
            f"| {ahead['n']} | `{statement_label(ahead['sql'], 60)}` | {rows_small:,} → "
            f"{rows_large:,} | {ahead['seconds']:.3f} s | {predicted:.3f} s | {measured:.3f} s | "
            f"{error:+.0%} ({_verdict(abs(error) <= PREDICTION_GOAL)}) |"
        )
    lines.append(
        f"| | {short['count']} statements under {min_seconds} s at both sizes | | | "
        f"{short['predicted']:.3f} s | {short['measured']:.3f} s | |"
    )
    statements = len(bench.predicted["statements"])
    lines += [
        "",
        f"| at {bench.small:,}, fresh clones | untraced: transaction / lock phase | traced "
        f"({statements} statements): transaction / lock phase |",
        "|---|---:|---:|",
    ]
    for k, (untraced, traced) in enumerate(bench.pairs, 1):
        lines.append(
            f"| pair {k} | {untraced.seconds:.3f} s / {untraced.lock_seconds:.3f} s | "
            f"{traced.seconds:.3f} s / {traced.lock_seconds:.3f} s |"
        )
    cost = statistics.median(t.seconds - u.seconds for u, t in bench.pairs)
    lock_cost = statistics.median(t.lock_seconds - u.lock_seconds for u, t in bench.pairs)
    lines.append(
        f"tracing cost (median of {len(bench.pairs)} pairs): {cost:+.3f} s on the transaction, "
        f"{lock_cost:+.3f} s on the lock phase"
    )
    return lines


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args()
    admin = admin_dsn(args.dsn)
    print(f"## {server_label(admin)}")
    print("\n".join(trace_lines(measure_trace(admin, args.small, args.large))))


if __name__ == "__main__":
    main()

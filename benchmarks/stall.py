"""Benchmark: how long booking writers stall while the migration is applied, side by side.

    uv run python benchmarks/stall.py --allocations 1000000 [--dsn ADMIN_DSN] [--reader-s 20]

On identical clones of one seeded database, each with four writers booking and confirming
tables through the application's functions and one report transaction reading `allocations`
open when the apply starts, the migration is applied three ways:

1. `psql -f` of the seed's migration (the origin's constraint definition): the naive baseline;
2. `psql -f` of our up.sql (our key order, nothing else);
3. our production apply step (`rollout.steps.apply_target`: lock_timeout, retries with
   backoff, the ledger row in the transaction), with the DAG's default settings;
4. the online apply (`rollout.online.apply_online`, issue 18): the lock phase built on a copy
   of `allocations` while the writers write, swapped in under a short lock.

For each: the writers' max and p99 latency and the wall-clock time they were blocked; for the
online apply also its lock held at the swap and the disk its copy took.
Goals: our worst stall <= 0.35 x the naive one (issue 9); the online apply's <= 1 s, not
growing with the table (issue 18). `--busy` measures each way a second time with a
CPU-busy neighbour process (one core spinning), as a busy production machine would;
`--ways` picks some (naive, script, step, online).

The down the same way, on clones with the up applied: `psql -f down.sql` against our rollback
step (`rollout.steps.rollback_target`: the same lock retries, every table the down locks taken
first in the application's order, the cache exported in the down's own transaction, the ledger
row), with the step's lock held and attempts; `--busy` repeats it beside the CPU-busy
neighbour; `--down-only` skips the up. Each table is headed by the machine's load average.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from applies import (
    BENCH_SQL,
    online_step,
    production_step,
    psql_file,
    rollback_step,
    seed_migration_sql,
)
from scratch import admin_dsn, benchmark_parser, seeded_database, server_label

from rollout import db
from rollout.migrations import load_bundle
from rollout.paths import sql_text
from rollout.workload import BookingWriters, LongReader, WriterStats

STALL_GOAL = 0.35
ONLINE_STALL_GOAL_S = 1.0
WAYS = {
    "naive": "psql -f, the seed's migration",
    "script": "psql -f, our up.sql",
    "step": "our production apply step",
    "online": "the online apply",
}


@dataclass(frozen=True)
class StallResult:
    how: str
    apply_seconds: float
    writers: WriterStats
    facts: dict = field(default_factory=dict)  # the online apply's own figures
    step: dict = field(default_factory=dict)  # the rollback step's result (lock held, attempts)
    waits: frozenset = frozenset()  # (waiter, blocker) roles seen waiting: what happened
    failed: str = ""  # how a `psql -f` way failed, as that way may (a deadlock)

    def happened(self) -> str:
        """What happened, not how long: the apply's outcome and who waited for whom."""
        said = lambda yes: "yes" if yes else "no"  # noqa: E731
        return (
            f"{self.how}: {'failed, ' + self.failed if self.failed else 'done'}; it waited "
            f"behind the report: {said(('apply', 'report') in self.waits)}; writers waited "
            f"behind it: {said(('writer', 'apply') in self.waits)}"
        )

    def row(self) -> str:
        w = self.writers
        return (
            f"| {self.how} | {self.apply_seconds:.1f} s | {w.max_latency:.2f} s | "
            f"{w.percentile(99):.2f} s | {w.blocked_seconds:.1f} s | {len(w.spans)} | "
            f"{len(w.errors)} |"
        )


def busy_neighbour() -> subprocess.Popen:
    """A process that keeps one core busy until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def role(application_name: str) -> str:
    """writer, report or apply: which side of the benchmark a session is."""
    if application_name.startswith("bench-writer"):
        return "writer"
    return "report" if application_name == "bench-long-reader" else "apply"


class LockWaits:
    """Who waited for whom (pg_blocking_pids, sampled every `every_s` from a session of its
    own) while an apply runs: the roles' pairs, so a result says what happened, not how long."""

    def __init__(self, dsn: str, every_s: float = 0.05) -> None:
        self.dsn, self.every_s = dsn, every_s
        self.pairs: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> LockWaits:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _sample(self) -> None:
        query = sql_text(BENCH_SQL / "lock_waits.sql").encode()
        with db.connect(self.dsn, application_name="bench-lock-waits") as conn:
            while not self._stop.is_set():
                for waiter, blocker in conn.execute(query).fetchall():
                    self.pairs.add((role(waiter), role(blocker)))
                self._stop.wait(self.every_s)


def psql_error(stderr: str) -> str:
    """psql's ERROR line (without its file:line prefix), or its last line."""
    lines = stderr.strip().splitlines() or ["no output"]
    error = next((line for line in lines if "ERROR:" in line), lines[-1])
    return error[error.find("ERROR:") :] if "ERROR:" in error else error


def measure_stall(
    dsn: str, how: str, apply: Callable[[str], object], reader_s: float, warmup_s: float = 3.0
) -> StallResult:
    writers = BookingWriters(dsn)
    writers.start()
    time.sleep(warmup_s)
    reader = LongReader(dsn, reader_s)
    reader.start()
    time.sleep(min(1.0, reader_s / 4))  # the report is well into its transaction
    started = time.perf_counter()
    failed = ""
    with LockWaits(dsn) as waits:
        try:
            outcome = apply(dsn)
        except subprocess.CalledProcessError as exc:  # psql -f: its failure is a result
            outcome, failed = None, psql_error(exc.stderr or "")
    applied = time.perf_counter() - started
    reader.join()
    time.sleep(warmup_s)
    facts = dict(outcome.online or {}) if getattr(outcome, "online", None) else {}
    stats = writers.stop()
    if facts:
        facts["lock_seconds"] = outcome.lock_seconds
        facts["worst_in"] = worst_stall_phase(stats, PHASES)
    PHASES.clear()
    return StallResult(
        how, applied, stats, facts, outcome if isinstance(outcome, dict) else {},
        frozenset(waits.pairs), failed,
    )  # fmt: skip


# (perf_counter, phase) as the online apply enters each phase: where its worst stall began.
PHASES: list[tuple[float, str]] = []


def note_phase(phase: str) -> None:
    if phase not in ("backfill-batch", "catch-up-round"):
        PHASES.append((time.perf_counter(), phase))


def worst_stall_phase(stats: WriterStats, phases: list[tuple[float, str]]) -> str:
    """The phase the online apply was in when the slowest booking began (or "before")."""
    if not stats.spans:
        return "no bookings"
    start, end = max(stats.spans, key=lambda span: span[1] - span[0])
    began = [name for at, name in phases if at <= start]
    return f"{began[-1] if began else 'before'} ({end - start:.2f} s)"


def run_stall(
    admin: str | None,
    allocations: int,
    reader_s: float,
    ways: tuple[str, ...] = ("naive", "script", "step"),
    busy: bool = False,
) -> list[StallResult]:
    applies = {
        "naive": psql_file(seed_migration_sql()),
        "script": psql_file(sql_text(load_bundle().up_path)),
        "step": production_step,
        "online": lambda dsn: online_step(dsn, on_phase=note_phase),
    }
    results = []
    for neighbour in (False, True) if busy else (False,):
        for way in ways:
            how = WAYS[way] + (", CPU-busy neighbour" if neighbour else "")
            with seeded_database(admin, allocations) as dsn:
                hog = busy_neighbour() if neighbour else None
                try:
                    results.append(measure_stall(dsn, how, applies[way], reader_s))
                finally:
                    if hog:
                        hog.kill()
                        hog.wait()
    return results


DOWN_WAYS = ("psql -f down.sql", "our rollback step")


def run_down_stall(
    admin: str | None, allocations: int, reader_s: float, busy: bool = False
) -> list[StallResult]:
    ways = [
        (DOWN_WAYS[0], psql_file(sql_text(load_bundle().down_path))),
        (DOWN_WAYS[1], rollback_step),
    ]
    results = []
    for neighbour in (False, True) if busy else (False,):
        for how, roll_back in ways:
            with seeded_database(admin, allocations) as dsn:
                production_step(dsn)  # the up first, by the run the rollback step belongs to
                hog = busy_neighbour() if neighbour else None
                try:
                    label = how + (", CPU-busy neighbour" if neighbour else "")
                    results.append(measure_stall(dsn, label, roll_back, reader_s))
                finally:
                    if hog:
                        hog.kill()
                        hog.wait()
    return results


def load_line() -> str:
    """The machine's load average and cores: the figures beside it were taken on a shared
    machine."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} on {os.cpu_count()} cores"


def stall_table(results: list[StallResult]) -> list[str]:
    lines = [
        "| apply | wall time | writers' max latency | p99 | blocked | bookings | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(r.row() for r in results),
    ]
    by_how = {r.how: r for r in results}
    naive, step = by_how.get(WAYS["naive"]), by_how.get(WAYS["step"])
    if naive and step:
        ours, worst = step.writers.max_latency, naive.writers.max_latency
        ratio = ours / worst if worst else float("nan")
        verdict = "met" if ratio <= STALL_GOAL else "NOT met"
        lines.append(
            f"worst stall, ours / naive: {ours:.2f} s / {worst:.2f} s = {ratio:.2f} "
            f"(goal <= {STALL_GOAL}: {verdict})"
        )
    for suffix in ("", ", CPU-busy neighbour"):
        naive, ours = by_how.get(DOWN_WAYS[0] + suffix), by_how.get(DOWN_WAYS[1] + suffix)
        if naive and ours:
            mine, worst = ours.writers.max_latency, naive.writers.max_latency
            lines.append(
                f"the down's worst stall{suffix}, ours / psql -f: {mine:.2f} s / {worst:.2f} s = "
                f"{mine / worst if worst else float('nan'):.2f}; ours held the lock "
                f"{ours.step.get('lock_seconds', float('nan')):.2f} s, "
                f"{ours.step.get('attempts')} attempt(s)"
            )
    for r in results:
        if r.facts:
            stall = r.writers.max_latency
            verdict = "met" if stall <= ONLINE_STALL_GOAL_S else "NOT met"
            lines.append(
                f"{r.how}: worst stall {stall:.2f} s (goal <= {ONLINE_STALL_GOAL_S:g} s: "
                f"{verdict}); wall {r.apply_seconds:.1f} s; lock held at the swap "
                f"{r.facts['lock_seconds']:.3f} s (waiting {r.facts.get('lock_wait_s', 0):.3f} s, "
                f"{r.facts.get('attempts')} attempt(s), {r.facts.get('last_round_keys')} rows "
                f"replayed under it); extra disk {r.facts['table_bytes'] / 2**20:.0f} MiB "
                f"(the copy); worst stall began in {r.facts.get('worst_in')}; phases "
                f"{r.facts.get('phases_s')}"
            )
    lines.extend(r.happened() for r in results)
    for r in results:
        for error in sorted(set(r.writers.errors))[:3]:
            lines.append(f"  writer error during {r.how}: {error}")
    return lines


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--allocations", type=int, default=1_000_000)
    parser.add_argument("--reader-s", type=float, default=20.0)
    parser.add_argument(
        "--ways", default="naive,script,step", help="comma-separated: " + ", ".join(WAYS)
    )
    parser.add_argument("--busy", action="store_true", help="also with a CPU-busy neighbour")
    parser.add_argument("--down-only", action="store_true", help="only the down's section")
    args = parser.parse_args()
    ways = tuple(w.strip() for w in args.ways.split(",") if w.strip())
    print(
        f"{server_label(admin_dsn(args.dsn))}, {args.allocations:,} allocations, "
        f"reader {args.reader_s:g} s",
        flush=True,
    )
    if not args.down_only:
        results = run_stall(args.dsn, args.allocations, args.reader_s, ways, args.busy)
        print(load_line())
        print("\n".join(stall_table(results)), flush=True)
    print("\nThe down:")
    downs = run_down_stall(args.dsn, args.allocations, args.reader_s, args.busy)
    print(load_line())
    print("\n".join(stall_table(downs)))


if __name__ == "__main__":
    main()

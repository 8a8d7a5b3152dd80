"""Benchmark: the fleet rollout over many small production databases on a real local Airflow.

    uv run python benchmarks/fleet.py --targets 100 [--dsn ADMIN_DSN] [--allocations 2000]

Staging and N production targets are clones of one seeded database on one server. The fleet
DAG runs on the LocalExecutor (parallelism and the pool `rollout_fleet` at --concurrency) with
a canary and waves sized so the plan fills the DAG's waves, the production gate answered
through the HITL REST call. Reported: the run's wall time without the gate's wait, against the
sum of the targets' own apply times (from their ledgers: the orchestration's overhead), and
the peak memory (RSS, each process with its children) of the scheduler (with the executor's
task processes), the api-server and the dag-processor, sampled every half second.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from scratch import admin_dsn, benchmark_parser, seeded_database, server_label

from rollout import db, ledger
from rollout.airflow_stack import APPROVER, FLEET_DAG_ID, AirflowStack, free_port
from rollout.demo_rollout import follow_run
from rollout.fleet import MAX_WAVES


@dataclass(frozen=True)
class FleetRun:
    targets: int
    state: str
    wall_s: float
    gate_s: float
    apply_sum_s: float
    applied: int
    peak_mib: dict[str, float]  # PSS
    peak_rss_mib: dict[str, float]
    preload: bool = True
    largest_process_mib: float = 0.0

    @property
    def rollout_s(self) -> float:
        return self.wall_s - self.gate_s


class PeakMemory:
    """Polls the memory of each named process with all its children until stopped: the sum of
    their PSS (each page shared between processes counted once, in shares: what the machine
    really holds), and of their RSS (each shared page counted in every process that maps it:
    forked workers that share the scheduler's modules are counted over and over)."""

    def __init__(self, processes: dict[str, int]) -> None:
        self.processes = processes
        self.peak: dict[str, float] = dict.fromkeys(processes, 0.0)  # PSS
        self.peak_rss: dict[str, float] = dict.fromkeys(processes, 0.0)
        self.largest_process = 0.0  # PSS of the largest single process seen, any of them
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            for name, pid in self.processes.items():
                with contextlib.suppress(psutil.Error):
                    root = psutil.Process(pid)
                    tree = [root, *root.children(recursive=True)]
                    rss = pss = 0
                    for proc in tree:
                        with contextlib.suppress(psutil.Error):
                            full = proc.memory_full_info()
                            rss, pss = rss + full.rss, pss + full.pss
                            self.largest_process = max(self.largest_process, full.pss / 2**20)
                    self.peak[name] = max(self.peak[name], pss / 2**20)
                    self.peak_rss[name] = max(self.peak_rss[name], rss / 2**20)


def measure_fleet(
    admin: str | None,
    targets: int,
    allocations: int = 2000,
    concurrency: int = 8,
    preload: bool = True,
) -> FleetRun:
    """One fleet run over `targets` clones; `preload` False runs Airflow's plain LocalExecutor
    instead of the rollout's preloading one (rollout/executor.py)."""
    admin = admin_dsn(admin)
    names = [f"bench_fleet_{i:03d}" for i in range(targets)]
    wave_size = max(1, math.ceil((targets - 1) / (MAX_WAVES - 1)))
    params = {"staging_conn_id": "bench_staging", "production_targets": ["bench_fleet_*"],
              "canary_size": 1, "wave_size": wave_size, "monitor_period_s": 0,
              "approvers": [APPROVER]}  # fmt: skip
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as home:
        dsns = {n: stack.enter_context(seeded_database(admin, allocations)) for n in names}
        dsns["bench_staging"] = stack.enter_context(seeded_database(admin, allocations))
        airflow = AirflowStack(
            home=Path(home), port=free_port(), connections=dsns, parallelism=concurrency,
            fleet_pool_slots=concurrency, preload=preload,
            extra_env={"ROLLOUT_ARTIFACTS_URL": f"file://{home}/artifacts"},
        )  # fmt: skip
        airflow.start(lambda message: None)
        with airflow:
            pids = {name: proc.pid for name, proc in airflow.processes.items()}
            with PeakMemory(pids) as memory:
                started = time.perf_counter()
                run_id = airflow.trigger(params, FLEET_DAG_ID)
                state, _ = follow_run(
                    airflow, run_id, lambda m: None, dag_id=FLEET_DAG_ID, timeout_s=3600,
                    quiet_tasks=True,
                )  # fmt: skip
                wall = time.perf_counter() - started
            gate = airflow.task_durations(run_id, FLEET_DAG_ID).get("approve_production") or 0.0
        applies = []
        for name in names:
            with db.connect(dsns[name]) as conn:
                applies += [r["duration_s"] for r in ledger.history(conn)
                            if r["direction"] == "up" and r["outcome"] == "applied"]  # fmt: skip
    return FleetRun(
        targets,
        state,
        wall,
        gate,
        sum(applies),
        len(applies),
        memory.peak,
        memory.peak_rss,
        preload,
        memory.largest_process,
    )


def fleet_lines(r: FleetRun) -> list[str]:
    executor = "preloading LocalExecutor" if r.preload else "plain LocalExecutor"
    goal = r.rollout_s <= 300 if r.targets == 100 else None
    return [
        f"fleet of {r.targets} databases ({r.state}, {executor}): {r.rollout_s:.1f} s without the gate's "
        f"wait ({r.wall_s:.1f} s in all); {r.applied} applied; the targets' own applies add up "
        f"to {r.apply_sum_s:.1f} s: orchestration {r.rollout_s - r.apply_sum_s:.1f} s, "
        f"{r.rollout_s / r.targets:.2f} s per target (of it orchestration "
        f"{(r.rollout_s - r.apply_sum_s) / r.targets:.2f} s)"
        + ("" if goal is None else f" (goal <= 300 s: {'met' if goal else 'NOT met'})"),
        "peak memory (PSS): "
        + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in r.peak_mib.items())
        + f"; all together at most {sum(r.peak_mib.values()):.0f} MiB "
        f"(goal <= 2048 MiB: {'met' if sum(r.peak_mib.values()) <= 2048 else 'NOT met'}); "
        f"the largest single process {r.largest_process_mib:.0f} MiB",
        "peak memory (RSS, shared pages counted in every process): "
        + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in r.peak_rss_mib.items()),
    ]


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--allocations", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--compare", action="store_true",
        help="also run it on Airflow's plain LocalExecutor, side by side in this run",
    )  # fmt: skip
    args = parser.parse_args()
    print(f"{server_label(admin_dsn(args.dsn))}, {args.allocations:,} allocations per target")
    for preload in (True, False) if args.compare else (True,):
        result = measure_fleet(args.dsn, args.targets, args.allocations, args.concurrency, preload)
        print("\n".join(fleet_lines(result)), flush=True)


if __name__ == "__main__":
    main()

"""Benchmark: the whole rollout DAG on a real local Airflow, against the same steps run bare.

    uv run python benchmarks/e2e.py --allocations 100000 [--dsn ADMIN_DSN]

Staging and production are two clones of one seeded database. The DAG runs on the same local
Airflow as `make demo` (api-server, scheduler, dag-processor; LocalExecutor), with the window
open now and no monitoring period; its gate is answered through the HITL REST call once a
person could have seen it. The time the gate and the window sensor waited is taken out: what
is left is the rollout's own time. Bare: the same `rollout.steps` functions called in order in
one process, no Airflow, on two fresh clones; and, for scale, only the two applies by psql -f.
Goal (issue 9): the DAG without the human and window waits <= 3 min at 100k allocations.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from applies import psql_file
from scratch import admin_dsn, benchmark_parser, seeded_database, server_label

from rollout import locktime, steps
from rollout.airflow_stack import APPROVER, AirflowStack, free_port
from rollout.artifacts import ArtifactDir
from rollout.demo_rollout import follow_run
from rollout.migrations import load_bundle
from rollout.paths import sql_text
from rollout.run import Run
from rollout.settings import RolloutSettings

GOAL_S = 180.0
PARAMS = {"monitor_period_s": 0, "approvers": [APPROVER]}
WAITS = ("approve_production", "wait_for_window")  # a person, a clock: not the rollout's time


@dataclass(frozen=True)
class EndToEnd:
    dag_state: str
    dag_s: float  # trigger to finished, as seen from outside
    waits_s: float  # the gate's and the window sensor's durations
    bare_steps_s: float
    bare_psql_s: float

    @property
    def rollout_s(self) -> float:
        return self.dag_s - self.waits_s


def time_dag(admin: str, allocations: int) -> tuple[str, float, float]:
    with (
        seeded_database(admin, allocations) as staging,
        seeded_database(admin, allocations) as production,
        tempfile.TemporaryDirectory() as home,
    ):
        stack = AirflowStack(
            home=Path(home),
            port=free_port(),
            connections={"rollout_staging": staging, "rollout_production": production},
        )
        stack.start(lambda message: None)
        with stack:
            started = time.perf_counter()
            run_id = stack.trigger(PARAMS)
            state, _ = follow_run(stack, run_id, lambda message: None, timeout_s=1200)
            elapsed = time.perf_counter() - started
            durations = stack.task_durations(run_id)
    return state, elapsed, sum(durations.get(task) or 0.0 for task in WAITS)


def time_bare_steps(admin: str, allocations: int) -> float:
    with (
        seeded_database(admin, allocations) as staging,
        seeded_database(admin, allocations) as production,
        tempfile.TemporaryDirectory() as out,
    ):
        run = Run(
            settings=RolloutSettings.from_params(PARAMS),
            dsns={"staging": staging, "production": production},
            artifacts=ArtifactDir(Path(out)),
            run_id="bench_bare",
            actor="bench",
            progress=lambda message: None,
        )
        started = time.perf_counter()
        checked = steps.preflight(run)
        staged = steps.apply_target(run, "staging")
        steps.validate(run, "staging")
        steps.capture_db_diff(run)
        steps.run_assignment_tests(run)
        predicted = locktime.predict_production_lock(staged, checked)
        steps.baseline_production_perf(run)
        steps.apply_target(
            run, "production", statement_timeout_s=locktime.production_statement_timeout(predicted)
        )
        steps.validate(run, "production")
        steps.monitor_production_perf(run)
        return time.perf_counter() - started


def time_bare_psql(admin: str, allocations: int) -> float:
    apply = psql_file(sql_text(load_bundle().up_path))
    with (
        seeded_database(admin, allocations) as staging,
        seeded_database(admin, allocations) as prod,
    ):
        started = time.perf_counter()
        apply(staging)
        apply(prod)
        return time.perf_counter() - started


def measure_end_to_end(admin: str | None, allocations: int) -> EndToEnd:
    admin = admin_dsn(admin)
    state, dag_s, waits_s = time_dag(admin, allocations)
    return EndToEnd(
        state,
        dag_s,
        waits_s,
        time_bare_steps(admin, allocations),
        time_bare_psql(admin, allocations),
    )


def end_to_end_lines(e: EndToEnd) -> list[str]:
    verdict = "met" if e.rollout_s <= GOAL_S and e.dag_state == "success" else "NOT met"
    return [
        f"DAG run ({e.dag_state}): {e.dag_s:.1f} s, of which the gate and window waited "
        f"{e.waits_s:.1f} s: the rollout itself {e.rollout_s:.1f} s "
        f"(goal <= {GOAL_S:.0f} s: {verdict})",
        f"the same steps bare, one process: {e.bare_steps_s:.1f} s; Airflow's overhead "
        f"{e.rollout_s - e.bare_steps_s:+.1f} s ({e.rollout_s / e.bare_steps_s:.2f}x)",
        f"only the two applies, psql -f: {e.bare_psql_s:.1f} s",
    ]


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--allocations", type=int, default=100_000)
    args = parser.parse_args()
    result = measure_end_to_end(args.dsn, args.allocations)
    print(f"{server_label(admin_dsn(args.dsn))}, {args.allocations:,} allocations per target")
    print("\n".join(end_to_end_lines(result)))


if __name__ == "__main__":
    main()

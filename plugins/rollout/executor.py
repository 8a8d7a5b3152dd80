"""Airflow's LocalExecutor, its workers started with the rollout's modules already imported.

Every task of a rollout is a new process: on Linux the LocalExecutor forks its workers from
the scheduler when it starts, and each worker forks the task's process. Whatever the scheduler
has imported by then, every task inherits for free; whatever it has not, every task imports
again: Airflow's task machinery and the rollout's modules (about 4.5 s of CPU) in each task,
Great Expectations (about 9 s more) in each validation. Importing them once here, before the
workers are forked, takes that off every task (benchmarks/README.md, "Task start-up").

Use it in place of the LocalExecutor: `[core] executor = rollout.executor.RolloutLocalExecutor`
(the local stack and the demo do). Nothing else changes: it is the LocalExecutor.
"""

from __future__ import annotations

import importlib
import logging
import time

from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger("rollout")

# What the rollout's tasks import: the DAGs' modules (and through them Airflow's task SDK and
# the HITL operators, psycopg, jsonschema), and the validation's Great Expectations.
PRELOAD = (
    "rollout.dag_parts",
    "rollout.operators",
    "rollout.steps",
    "rollout.fleet_steps",
    "great_expectations",
    "great_expectations.checkpoint",
    "great_expectations.expectations.registry",
    "great_expectations.datasource.fluent.sql_datasource",
    "matplotlib.pyplot",  # the performance plots (its backend set to Agg first, below)
)


def preload() -> float:
    """Import what the tasks will need; seconds it took. A module that fails to import is only
    logged: its tasks will fail with the reason themselves."""
    started = time.perf_counter()
    import matplotlib

    matplotlib.use("Agg")  # no display: what probes.plot_png sets too
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # pragma: no cover - a broken install shows in the tasks
            log.warning("rollout executor: could not preload %s: %s", name, exc)
    return time.perf_counter() - started


class RolloutLocalExecutor(LocalExecutor):
    """The LocalExecutor, preloading the rollout's modules before it forks its workers."""

    def start(self) -> None:
        if self.is_mp_using_fork:  # spawned workers would import everything anyway
            log.info("rollout executor: preloaded the tasks' modules in %.1f s", preload())
        super().start()

"""The tasks both rollout DAGs share, made once: the staging half of the story and its rollback.

Call these inside a `with DAG(...)` block; each returns the task(s) it made, for the DAG file to
chain in its own story. Every task is one step of `rollout.steps`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task
from airflow.sdk.exceptions import AirflowSkipException

from rollout import steps
from rollout.airflow_support import fail_task, run_from_context, run_step, task_states
from rollout.errors import RolloutError

ROLLBACK_NOT_NEEDED = ("not_needed",)


def staging_tasks() -> list[Any]:
    """apply_staging → validate_staging → capture_db_diff → run_assignment_tests."""

    @task
    def apply_staging(**context) -> dict:
        return run_step(steps.apply_target, context, "staging")

    @task
    def validate_staging(**context) -> dict:
        return run_step(steps.validate, context, "staging")

    @task
    def capture_db_diff(**context) -> dict:
        return run_step(steps.capture_db_diff, context)

    @task
    def run_assignment_tests(**context) -> dict:
        return run_step(steps.run_assignment_tests, context)

    return [apply_staging(), validate_staging(), capture_db_diff(), run_assignment_tests()]


def rollback_staging_task() -> Any:
    @task(trigger_rule="one_failed")
    def rollback_staging(**context) -> dict:
        """A staging step failed, or the gate was rejected / not answered in time."""
        run = run_from_context(context)
        states = task_states(context)
        if (
            states.get("approve_production") == "failed"
            and run.settings.on_reject == "keep_staging"
        ):
            raise AirflowSkipException("approval not given; on_reject=keep_staging keeps staging")
        return rollback_or_skip(run, "staging", context)

    return rollback_staging()


def rollback_or_skip(run: steps.Run, target: str, context: Any) -> dict:
    """Roll a target back; a target this run never changed is skipped, saying so."""
    try:
        result = steps.rollback_target(run, target)
    except RolloutError as exc:
        raise fail_task(context, exc) from exc
    if result["action"] in ROLLBACK_NOT_NEEDED:
        raise AirflowSkipException(f"{target}: nothing to roll back (not changed by this run)")
    return result

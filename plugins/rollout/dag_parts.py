"""The tasks both rollout DAGs share, made once: the staging half of the story and its rollback.

Call these inside a `with DAG(...)` block; each returns the task(s) it made, for the DAG file to
chain in its own story. Every task is one step of `rollout.steps`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from rollout import locktime, steps
from rollout.airflow_run import run_or_why_not, run_started, task_states
from rollout.artifacts import ArtifactDir
from rollout.errors import RolloutError
from rollout.operators import fail_task, run_step, skip_task
from rollout.report import task_note
from rollout.run import Run

# The task that checks the window and the lock budget before anyone is asked to approve.
PRE_APPROVAL_CHECK = "check_window_and_budget"


def staging_tasks() -> list[Any]:
    """apply_staging → validate_staging → capture_db_diff → run_assignment_tests."""

    @task
    def apply_staging(**context) -> dict:
        """The up on staging: online only when apply_mode says online (auto measures the
        locking lock, which production's choice and prediction are based on)."""
        mode = context["params"].get("apply_mode")
        return run_step(
            steps.apply_target, context, "staging", mode="online" if mode == "online" else "locking"
        )

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


def pre_approval_check_task(
    staged: Any, checked: Any, *, check_production_data: bool = False
) -> Any:
    """check_window_and_budget, given apply_staging's and preflight's results; with
    `check_production_data`, production's suite too, for the gate to show what it already
    violates (the single-target rollout: a fleet's targets are checked at their own preflight)."""

    @task(task_id=PRE_APPROVAL_CHECK)
    def check_window_and_budget(staged: dict, checked: dict, **context) -> dict:
        """Nobody is asked to approve a rollout that cannot happen: the predicted production
        lock (the largest production target's, in a fleet) within the budget, and a window
        that has not passed and can hold it. Checked again after the approval. Production's
        own suite, read-only: what it already violates, for the approver (never a refusal)."""
        predicted = locktime.predict_production_lock(staged, checked)
        decided = run_step(
            steps.check_before_approval, context, predicted, run_started(context),
            basis=locktime.prediction_basis(staged, checked),
        )  # fmt: skip
        if check_production_data:
            decided["production_data"] = run_step(steps.check_production_data, context, "approval")
        return decided

    return check_window_and_budget(staged, checked)


def rollback_staging_task() -> Any:
    @task(trigger_rule="one_failed")
    def rollback_staging(**context) -> dict:
        """A staging step failed, or the gate was rejected / not answered in time. Only what
        this run applied is undone; staging applied by an earlier run stays as it is."""
        run, refused = run_or_why_not(context)
        states = task_states(context)
        if run is None:
            raise skip_task(context, f"nothing to roll back: the run was refused ({refused})")
        if states.get(PRE_APPROVAL_CHECK) == "failed":
            raise skip_task(
                context,
                "staging kept: production was refused before anyone was asked to approve "
                "(window or lock budget); trigger again with a window that fits",
            )
        if (
            states.get("approve_production") == "failed"
            and run.settings.on_reject == "keep_staging"
        ):
            raise skip_task(context, "approval not given; on_reject=keep_staging keeps staging")
        return rollback_or_skip(run, "staging", context, states.get("apply_staging"))

    return rollback_staging()


def rollback_or_skip(
    run: Run,
    target: str,
    context: Any,
    apply_state: str | None,
    folder: ArtifactDir | None = None,
) -> dict:
    """Roll back what this run applied to a target. A target whose apply never ran in this run
    is not even connected to; one its apply left unchanged, or that an earlier run migrated, is
    left as it is, saying so (notes/<task>.txt) for the summary. An apply killed before it
    committed gets its ledger row here, and the note says so."""
    if apply_state not in ("success", "failed"):
        raise skip_task(
            context,
            f"{target}: nothing to roll back: this run never applied it (its apply "
            f"{apply_state or 'did not run'})",
            folder,
        )
    try:
        if (
            apply_state == "failed"
            and task_note(folder or run.artifacts, f"apply_{target}") is None
        ):
            killed = steps.record_killed_apply(run, target)  # no reason kept: its process died
            if killed is not None:
                raise skip_task(context, killed, folder)
        result = steps.rollback_target(run, target)
    except RolloutError as exc:
        raise fail_task(context, exc, folder) from exc
    if result["action"] != "rolled_back":
        raise skip_task(context, f"{target}: {result['why']}", folder)
    return result

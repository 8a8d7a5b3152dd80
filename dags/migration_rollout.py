"""The staged rollout of one migration bundle: staging, proof, a person's approval, production
inside the maintenance window, performance watched after, rollback where a step fails.

Each task is one step of `rollout.steps`; this file only tells the story and wires it.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, PokeReturnValue, chain, task
from airflow.sdk.exceptions import AirflowFailException

from rollout import steps
from rollout.airflow_support import (
    ProductionApproval,
    fail_safe_artifacts,
    fail_task,
    run_from_context,
    run_or_why_not,
    run_step,
    send_outcome,
    settings_from_context,
    skip_task,
    task_states,
    window_poke,
)
from rollout.dag_parts import (
    pre_approval_check_task,
    rollback_or_skip,
    rollback_staging_task,
    staging_tasks,
)
from rollout.errors import RolloutError
from rollout.settings import PARAM_SCHEMA

with DAG(
    dag_id="migration_rollout",
    description="Staged rollout of a PostgreSQL migration: staging, approval, production window",
    schedule=None,
    start_date=dt.datetime(2025, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,  # with the advisory lock in each target: one rollout at a time
    default_args={"retries": 0},
    params={
        name: Param(default, description=doc, **schema)
        for name, (default, schema, doc) in PARAM_SCHEMA.items()
    },
    tags=["migration", "rollout"],
) as dag:

    @task
    def preflight(**context) -> dict:
        try:
            settings_from_context(context)  # a bad parameter fails before any connection
            return steps.preflight(run_from_context(context))
        except RolloutError as exc:
            raise fail_task(context, exc) from exc

    @task.sensor(poke_interval=30, mode="reschedule", timeout=8 * 24 * 3600)
    def wait_for_window(**context) -> PokeReturnValue:
        """Rescheduled between checks: waiting holds no worker slot."""
        ti = context["ti"]
        return window_poke(
            context,
            run_from_context(context),
            lambda: steps.predict_production_lock(
                ti.xcom_pull(task_ids="apply_staging"), ti.xcom_pull(task_ids="preflight")
            ),
            "production",
        )

    @task
    def baseline_production_perf(**context) -> dict:
        return run_step(steps.baseline_production_perf, context)

    @task
    def apply_production(**context) -> dict:
        window = context["ti"].xcom_pull(task_ids="wait_for_window")
        timeout = steps.production_statement_timeout(window["predicted_lock_s"])
        return run_step(steps.apply_target, context, "production", statement_timeout_s=timeout)

    @task
    def validate_production(**context) -> dict:
        return run_step(steps.validate, context, "production")

    @task
    def monitor_production_perf(**context) -> dict:
        return run_step(steps.monitor_production_perf, context)

    @task(trigger_rule="one_failed")
    def rollback_production(**context) -> dict:
        """A production step failed, or monitoring found a regression (per on_regression).
        Only what this run applied is undone: a rejected or refused re-run never touches the
        production an earlier run migrated."""
        run, refused = run_or_why_not(context)
        if run is None:
            raise skip_task(context, f"nothing to roll back: the run was refused ({refused})")
        states = task_states(context)
        regression_only = states.get("monitor_production_perf") == "failed" and all(
            states.get(t) == "success" for t in ("apply_production", "validate_production")
        )
        if regression_only and run.settings.on_regression == "keep":
            raise skip_task(context, "regression found; on_regression=keep leaves production as is")
        return rollback_or_skip(run, "production", context, states.get("apply_production"))

    @task(trigger_rule="all_done")
    def report(**context) -> dict:
        """Always: one summary of the run, each target's state and whose work it is; the
        leases given back; the run fails unless the rollout succeeded."""
        states = task_states(context)
        states.pop("report", None)
        order = context["dag"].task_ids
        states = dict(sorted(states.items(), key=lambda item: order.index(item[0])))
        run, refused = run_or_why_not(context)
        dag_run = context["dag_run"]
        if run is None:
            summary = steps.write_refused_report(
                fail_safe_artifacts(context), dag_run.run_id,
                getattr(dag_run, "triggering_user_name", None), refused, states,
            )  # fmt: skip
            version = str(context["params"].get("version") or "(refused parameters)")
        else:
            facts = {t: context["ti"].xcom_pull(task_ids=t) for t in states}
            summary = steps.write_report(run, states, facts)
            steps.release_leases(run)
            version = run.bundle.version
        send_outcome(context, version, summary["outcome"], summary["targets"])
        if summary["outcome"] != "succeeded":
            raise AirflowFailException(f"rollout {summary['outcome']} (see summary.md)")
        return summary

    # The story, in order (tasks are created in this order, which the report follows too).
    story = [
        preflight(),
        *staging_tasks(),  # apply_staging, validate_staging, capture_db_diff, run_assignment_tests
        pre_approval_check_task(),  # check_window_and_budget
        ProductionApproval(task_id="approve_production"),
        wait_for_window(),
        baseline_production_perf(),
        apply_production(),
        validate_production(),
        monitor_production_perf(),
    ]
    chain(*story)
    staging_steps, gate, production_steps = story[1:5], story[6], story[9:]
    rollbacks = [rollback_staging_task(), rollback_production()]
    [*staging_steps, gate] >> rollbacks[0]
    production_steps >> rollbacks[1]
    [*story, *rollbacks] >> report()

"""# migration_rollout: one migration bundle, staging first, production in its window

The story, task by task (each is one step of `rollout.steps`, tested without Airflow; this file
only tells the story and wires it):

1. **preflight**: the parameters, both targets reachable, this run's lease on each (one rollout
   per database, whichever DAG), the bundle exactly as the ledger knows it, the bundle's own
   preflight checks, the "before" of each target. The bundle is copied into the run's artifacts:
   every later step runs that copy, and refuses if the folder was edited since. A version applied
   on both targets already ends the run here (skipped, "nothing to do"): nobody is asked.
2. **apply_staging → validate_staging → capture_db_diff → run_assignment_tests**: the up on
   staging (lock retries, the ledger row and the row rules in its transaction), its suites and
   catalog checks, the schema diff and staging/production drift, the bundle's application tests.
3. **check_window_and_budget**: nobody is asked to approve a rollout that cannot happen; and
   production's own suite runs, so the gate shows what production already violates.
4. **approve_production**: a person decides (Airflow's Required Actions page; the body holds
   the evidence and a link to the review page). Four eyes: only the `approvers`, never the
   person who triggered the run. Reject, or no answer in `approval_timeout_h`, stops here.
5. **wait_for_window → baseline_production_perf → apply_production → validate_production →
   monitor_production_perf**: production inside the maintenance window, its queries timed
   before and watched after; production's suite runs again right before the apply, and the
   check after it fails only on what the migration made new or worse (a violation already there
   is the reviewer's to accept on the gate, never a reason to roll back).
6. **rollback_staging / rollback_production**: when a step fails; only what this run applied.
7. **report**: always; the summary, the leases given back; the run fails unless it succeeded.

**Parameters** (checked on trigger and again at preflight, a bad one named): `version` (empty:
the newest bundle), the two connection ids, the window (`window_kind`, `window_start`,
`window_minutes`, `window_timezone`, `on_window_passed`), the lock retries (`lock_timeout_ms`,
`lock_retries`, `retry_backoff_s`) and `lock_budget_s`, monitoring (`monitor_period_s`,
`regression_threshold`, `on_regression`), `on_reject`, `approvers` (required) and
`waive_four_eyes`, `approval_timeout_h`, `staging_has_writers`, `supabase_history`,
`apply_mode` and `online_above_s` (locking, or the table rebuilt beside the live one and
swapped in under a short lock; auto chooses by production's predicted lock).

**To approve**: open the run's *Required Actions* (or the notification's link) as one of the
approvers, read the evidence (the *Rollout artifacts* tab shows the review page), Approve or
Reject. The README's "Rolling out to real databases" says what each failure means.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, PokeReturnValue, chain, task
from airflow.sdk.exceptions import AirflowFailException

from rollout import locktime, steps
from rollout.airflow_paths import fail_safe_artifacts
from rollout.airflow_run import run_from_context, run_or_why_not, settings_from_context, task_states
from rollout.dag_parts import (
    pre_approval_check_task,
    rollback_or_skip,
    rollback_staging_task,
    staging_tasks,
)
from rollout.errors import RolloutError
from rollout.operators import (
    ProductionApproval,
    fail_task,
    run_step,
    send_outcome,
    skip_task,
    window_poke,
)
from rollout.report import ENDED_WELL, write_refused_report, write_report
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
    doc_md=__doc__,
) as dag:

    @task
    def preflight(**context) -> dict:
        try:
            settings_from_context(context)  # a bad parameter fails before any connection
            checked = steps.preflight(run_from_context(context))
        except RolloutError as exc:
            raise fail_task(context, exc) from exc
        if "nothing_to_do" in checked:  # every step after it skipped; the report says why
            raise skip_task(context, checked["nothing_to_do"])
        return checked

    @task.sensor(poke_interval=30, mode="reschedule", timeout=8 * 24 * 3600)
    def wait_for_window(staged: dict, checked: dict, **context) -> PokeReturnValue:
        """Open when the window is and the lock predicted from staging's fits what is left of
        it; rescheduled between checks: waiting holds no worker slot."""
        return window_poke(
            context,
            run_from_context(context),
            lambda: locktime.predict_production_lock(staged, checked),
            "production",
        )

    @task
    def baseline_production_perf(**context) -> dict:
        """Right before the apply: the application's queries timed, then production's suite
        run (the "before" validate_production judges against: only what the migration made
        new or worse fails there)."""
        perf = run_step(steps.baseline_production_perf, context)
        return {**perf, "data_before": run_step(steps.check_production_data, context, "apply")}

    @task
    def apply_production(window: dict, **context) -> dict:
        """The up on production, locking or online as the window's check decided (its
        statement_timeout sized from the lock it is to hold)."""
        timeout = locktime.production_statement_timeout(window["window_lock_s"])
        return run_step(
            steps.apply_target, context, "production", statement_timeout_s=timeout,
            mode=window["apply_mode"],
        )  # fmt: skip

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
            summary = write_refused_report(
                fail_safe_artifacts(context), dag_run.run_id,
                getattr(dag_run, "triggering_user_name", None), refused, states,
            )  # fmt: skip
            version = str(context["params"].get("version") or "(refused parameters)")
        else:
            facts = {t: context["ti"].xcom_pull(task_ids=t) for t in states}
            summary = write_report(run, states, facts)
            steps.release_leases(run)
            version = run.bundle.version
        send_outcome(context, version, summary["outcome"], summary["targets"])
        if summary["outcome"] not in ENDED_WELL:
            raise AirflowFailException(f"rollout {summary['outcome']} (see summary.md)")
        return summary

    # The story, in order (tasks are created in this order, which the report follows too); what
    # a task consumes from another is passed to it, so the graph shows the data flow.
    checked = preflight()
    staged, validated, diffed, tested = staging_tasks()
    fits = pre_approval_check_task(staged, checked, check_production_data=True)
    gate = ProductionApproval(task_id="approve_production")
    window = wait_for_window(staged, checked)
    baseline = baseline_production_perf()
    applied = apply_production(window)
    production_checked = validate_production()
    monitored = monitor_production_perf()
    chain(checked, staged, validated, diffed, tested, fits, gate, window, baseline, applied,
          production_checked, monitored)  # fmt: skip
    rollbacks = [rollback_staging_task(), rollback_production()]
    [staged, validated, diffed, tested, gate] >> rollbacks[0]
    [applied, production_checked, monitored] >> rollbacks[1]
    [checked, staged, validated, diffed, tested, fits, gate, window, baseline, applied,
     production_checked, monitored, *rollbacks] >> report()  # fmt: skip

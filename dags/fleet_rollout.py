"""The staged rollout of one migration bundle to a fleet of production databases, in waves.

Staging and its proof come first, as in `migration_rollout`, then one approval for production.
Production targets (`production_targets`: connection ids, patterns like `prod_*`, or `@group`
from fleet.toml, all checked before anything runs) are rolled out in waves: a canary wave
(`canary_size`, default one target), then waves of `wave_size`. Wave k is the task group
`wave_k`: its approval (`approve`, with `approve_each_wave`, the previous wave's results in its
text), the maintenance window (`wait_for_window`), then one mapped instance of `target` per
target of the wave, named by its connection id: preflight, apply, validate, monitor in one
task process, at most as many at once as the pool `rollout_fleet` has slots. A wave starts only when every target of the wave before succeeded:
Airflow's own trigger rules hold it back, nothing polls.

When a target fails no further target starts; the failed one is rolled back in its own task,
and the others stay applied (`on_target_failure=leave_healthy`) or are rolled back too
(`rollback_all`, by `rollback_targets` after the waves). The report says, per target,
applied / not applied / rolled back / refused and why; the run's review page (its *Rollout
artifacts* tab) has one row per target, each linking to that target's evidence. Run it again
to continue where it stopped: applied targets are no-ops through their ledgers.

Nothing here depends on the executor: LocalExecutor, CeleryExecutor, KubernetesExecutor.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, PokeReturnValue, chain, get_current_context, task, task_group
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rollout import fleet, fleet_steps, locktime, report
from rollout.airflow_paths import fail_safe_artifacts
from rollout.airflow_run import (
    dsn_or_why_not,
    fleet_dsns,
    fleet_from_context,
    run_from_context,
    run_or_why_not,
    task_states,
)
from rollout.dag_parts import (
    pre_approval_check_task,
    rollback_staging_task,
    staging_tasks,
)
from rollout.errors import RolloutError
from rollout.operators import (
    ProductionApproval,
    WaveApproval,
    fail_task,
    send_outcome,
    skip_task,
    window_poke,
)
from rollout.run import Run


def _target_run(context, entry: dict) -> Run:
    """This target's own Run (artifacts under targets/<conn_id>/)."""
    run = run_from_context(context)
    return fleet_steps.target_run(run, entry["conn_id"], dsn_or_why_not(entry["conn_id"]))


with DAG(
    dag_id="fleet_rollout",
    description="Staged rollout of a PostgreSQL migration to a fleet of databases, in waves",
    doc_md=__doc__,
    schedule=None,
    start_date=dt.datetime(2025, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0},
    params={
        name: Param(default, description=doc, **schema)
        for name, (default, schema, doc) in fleet.FLEET_DAG_PARAMS.items()
    },
    tags=["migration", "rollout", "fleet"],
) as dag:

    @task
    def preflight(**context) -> dict:
        """Every parameter and every production target checked before anything runs."""
        try:
            settings = fleet_from_context(context)
            return fleet_steps.preflight_fleet(
                run_from_context(context), settings, fleet_dsns(settings)
            )
        except RolloutError as exc:
            raise fail_task(context, exc) from exc

    @task
    def plan_targets(checked: dict) -> list[dict]:
        """One entry per production target, in order: its wave and its slot in the wave."""
        return checked["plan"]

    def wave(k: int, checked, staged):
        """Wave k: its approval (after the canary), the window, then each of its targets."""

        @task_group(group_id=fleet.wave_group(k))
        def wave_group():
            @task.sensor(
                poke_interval=30, mode="reschedule", timeout=8 * 24 * 3600,
                trigger_rule="none_failed",
            )  # fmt: skip
            def wait_for_window(staged: dict, checked: dict, **context) -> PokeReturnValue:
                """Open when the maintenance window is; the wave's largest target's predicted
                lock must fit what is left of it. Rescheduled: waiting holds no slot."""
                members = [t["conn_id"] for t in checked["plan"] if t["wave"] == k]
                if not members:
                    raise AirflowSkipException(f"the plan has no wave {k}")
                return window_poke(
                    context,
                    run_from_context(context),
                    lambda: locktime.predict_target_lock(
                        staged,
                        checked["staging"]["locked_rows"],
                        max(checked["targets"][c] for c in members),
                    ),
                    f"wave {k}",
                    record=f"{fleet.wave_group(k)}/window-decision.json",
                )

            # After the wave before: run when it had a success and no failure; an empty wave
            # after the last skips the rest without running them.
            # (It reads the plan itself rather than taking preflight's result: an argument would
            # make preflight an upstream too, and its success would start a wave after one
            # that never ran.)
            @task(trigger_rule="none_failed_min_one_success")
            def targets(**context) -> list[dict]:
                """The entries of this wave's targets: what each instance of `target` gets."""
                plan = context["ti"].xcom_pull(task_ids="preflight")["plan"]
                return [t for t in plan if t["wave"] == k]

            # One task per target, its steps in one process (fleet_steps.roll_out_target); the
            # UI names each instance by its connection id.
            @task(
                pool=fleet.FLEET_POOL,
                map_index_template="{{ target_conn_id | default('') }}",
            )
            def target(entry: dict, **context) -> dict:
                """No start once a target has failed; else this target's preflight and
                baseline, apply, validation and monitoring, rolled back here when its
                validation fails or it regresses."""
                # The name is rendered from the task's own context, not this copy of it.
                get_current_context()["target_conn_id"] = entry["conn_id"]
                plan = context["ti"].xcom_pull(task_ids="preflight")["plan"]
                stopped = fleet_steps.stop_reason(plan, task_states(context))
                if stopped:
                    raise AirflowSkipException(stopped)
                window = context["ti"].xcom_pull(task_ids=f"{fleet.wave_group(k)}.wait_for_window")
                try:
                    trun = _target_run(context, entry)
                    return fleet_steps.roll_out_target(
                        trun,
                        statement_timeout_s=locktime.production_statement_timeout(
                            window["window_lock_s"]
                        ),
                        mode=window["apply_mode"],
                        data_docs=fleet_from_context(context).renders_data_docs(entry),
                    )
                except RolloutError as exc:  # its reason is in failures/<step>.txt already
                    raise AirflowFailException(str(exc)) from exc

            window = wait_for_window(staged, checked)
            if k > 0:
                approval = WaveApproval(
                    task_id="approve", wave=k, trigger_rule="none_failed_min_one_success"
                )
                approval >> window
            chain(window, target.expand(entry=targets()))

        return wave_group()

    @task(trigger_rule="all_done")
    def rollback_targets(**context) -> dict:
        """After the waves: with rollback_all, every target this run applied once one failed or
        a wave was rejected; and any target whose own task ended after its apply without
        finishing (a killed process). A target an earlier run migrated stays as it is."""
        run, refused = run_or_why_not(context)
        if run is None:
            raise skip_task(context, f"nothing to roll back: the run was refused ({refused})")
        checked = context["ti"].xcom_pull(task_ids="preflight")
        plan = checked["plan"] if checked else []
        done = fleet_steps.rollback_targets(
            fleet_from_context(context), plan,
            [_target_run(context, entry) for entry in plan], task_states(context),
        )  # fmt: skip
        if not done:
            raise skip_task(context, "no target to roll back")
        refused_ones = {c: why for c, why in done.items() if why.startswith("rollback refused")}
        if refused_ones:
            raise fail_task(context, RolloutError("; ".join(
                f"{c}: {why}" for c, why in refused_ones.items())))  # fmt: skip
        return done

    @task(trigger_rule="all_done")
    def report(**context) -> dict:
        """Always: each target's final state and why; the leases given back; the run fails
        unless every target is applied and healthy."""
        states = task_states(context)
        run, refused = run_or_why_not(context)
        dag_run = context["dag_run"]
        if run is None:
            summary = report.write_refused_report(
                fail_safe_artifacts(context), dag_run.run_id,
                getattr(dag_run, "triggering_user_name", None), refused, states,
            )  # fmt: skip
            send_outcome(context, "(refused parameters)", summary["outcome"])
            raise AirflowFailException(f"fleet rollout {summary['outcome']} (see summary.md)")
        checked = context["ti"].xcom_pull(task_ids="preflight")
        plan = checked["plan"] if checked else []
        target_runs = [_target_run(context, entry) for entry in plan]
        summary = fleet_steps.write_fleet_report(run, plan, target_runs, states)
        send_outcome(
            context, run.bundle.version, summary["outcome"],
            {row["conn_id"]: row["state"] for row in summary["targets"]},
        )  # fmt: skip
        if summary["outcome"] != "succeeded":
            raise AirflowFailException(f"fleet rollout {summary['outcome']} (see summary.md)")
        return summary

    # The story, in order; what a task consumes from another is passed to it.
    checked = preflight()
    # apply_staging, validate_staging, capture_db_diff, run_assignment_tests
    staging = staging_tasks()
    gate = ProductionApproval(task_id="approve_production")
    chain(checked, *staging, pre_approval_check_task(staging[0], checked), gate)
    plan = plan_targets(checked)
    waves = [wave(k, checked, staging[0]) for k in range(fleet.MAX_WAVES)]
    chain(gate, plan, *waves)  # wave k+1 after wave k: all of its targets must succeed
    rollbacks = rollback_targets()
    waves[-1] >> rollbacks
    staging_rollback = rollback_staging_task()
    [*staging, gate] >> staging_rollback
    [checked, *staging, gate, plan, *waves, rollbacks, staging_rollback] >> report()

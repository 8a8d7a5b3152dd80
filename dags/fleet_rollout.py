"""The staged rollout of one migration bundle to a fleet of production databases, in waves.

Staging and its proof come first, as in `migration_rollout`, then one approval for production.
Production targets (`production_targets`: connection ids, patterns like `prod_*`, or `@group`
from fleet.toml, all checked before anything runs) are rolled out in waves: a canary wave
(`canary_size`, default one target), then waves of `wave_size`. Each target runs its own
preflight, window check, apply, validation and monitoring, as mapped tasks of the group
`target`, at most as many at once as the pool `rollout_fleet` has slots. A wave starts only when
every target of the earlier waves is healthy, and, with `approve_each_wave`, when a person
approved it (the gate `wave_gate.approve_wave`, the previous wave's results in its text).

When a target fails no further target starts; the failed one is rolled back, and the others
stay applied (`on_target_failure=leave_healthy`) or are rolled back too (`rollback_all`). The
report says, per target, applied / not applied / rolled back / refused and why. Run it again
to continue where it stopped: applied targets are no-ops through their ledgers.

Nothing here depends on the executor: LocalExecutor, CeleryExecutor, KubernetesExecutor.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, PokeReturnValue, chain, task, task_group
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rollout import fleet, fleet_steps, steps
from rollout.airflow_support import (
    ProductionApproval,
    WaveApproval,
    fail_task,
    fleet_dsns,
    fleet_from_context,
    run_from_context,
    run_started,
    run_step,
    send_outcome,
    task_states,
)
from rollout.dag_parts import rollback_or_skip, rollback_staging_task, staging_tasks
from rollout.errors import RolloutError

FLEET_POOL = "rollout_fleet"  # its slots: how many targets work at once
TURN_POKE_S = 10


def _target_run(context, entry: dict) -> steps.Run:
    """This target's own Run (artifacts under targets/<conn_id>/)."""
    from rollout.targets import resolve_target

    run = run_from_context(context)
    return fleet_steps.target_run(run, entry["conn_id"], resolve_target(entry["conn_id"]))


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
    def plan_targets(**context) -> list[dict]:
        """One entry per production target: what each instance of `target` gets."""
        return context["ti"].xcom_pull(task_ids="preflight")["plan"]

    @task
    def plan_wave_gates(**context) -> list[int]:
        """The waves a person approves (approve_each_wave): every wave after the canary."""
        settings = fleet_from_context(context)
        return list(range(1, len(settings.waves))) if settings.approve_each_wave else []

    @task_group(group_id="wave_gate")
    def wave_gate(wave: int):
        @task.sensor(poke_interval=TURN_POKE_S, mode="reschedule", timeout=8 * 24 * 3600)
        def wait_for_wave(wave: int, **context) -> PokeReturnValue:
            """Open the gate of `wave` once the wave before it is healthy."""
            plan = context["ti"].xcom_pull(task_ids="preflight")["plan"]
            states = task_states(context)
            if any(fleet.target_progress(states, i) == "failed" for i in range(len(plan))):
                raise AirflowSkipException("the fleet stopped: no approval needed")
            previous = fleet.wave_summary(plan, wave - 1, states)
            done = all(p == "healthy" for p in previous.values())
            return PokeReturnValue(is_done=done, xcom_value={"wave": wave, "previous": previous})

        wait_for_wave(wave) >> WaveApproval(task_id="approve_wave")

    @task_group(group_id="target")
    def production_target(entry: dict):
        @task.sensor(poke_interval=TURN_POKE_S, mode="reschedule", timeout=8 * 24 * 3600)
        def wait_for_turn(entry: dict, **context) -> PokeReturnValue:
            """Start when the earlier waves are healthy (and approved) and the window fits;
            never once a target has failed."""
            run = _target_run(context, entry)
            ti = context["ti"]
            checked = ti.xcom_pull(task_ids="preflight")
            settings = fleet_from_context(context)
            turn = fleet.decide_turn(
                checked["plan"], ti.map_index, task_states(context), settings.approve_each_wave
            )
            run.say(f"{entry['conn_id']}: {turn.reason}")
            if turn.action == "stop":
                run.artifacts.write_text(fleet_steps.NOT_STARTED_FILE, turn.reason + "\n")
                raise AirflowSkipException(turn.reason)
            if turn.action == "wait":
                return PokeReturnValue(is_done=False)
            try:
                predicted = fleet_steps.predict_target_lock(
                    ti.xcom_pull(task_ids="apply_staging"),
                    checked["staging"]["allocation_rows"],
                    checked["targets"][entry["conn_id"]],
                )
                decision = steps.check_window(run, predicted, run_started(context))
                run.say(f"maintenance window: {decision.reason}")
                if decision.action == "refuse":
                    raise steps.StepFailed(f"{decision.reason}; {entry['conn_id']} untouched")
            except RolloutError as exc:
                raise fail_task(context, exc, run.artifacts) from exc
            return PokeReturnValue(
                is_done=decision.action == "go", xcom_value={"predicted_lock_s": predicted}
            )

        @task(pool=FLEET_POOL)
        def preflight(entry: dict, **context) -> dict:
            """This target's own checks and "before", then its performance baseline."""
            run = _target_run(context, entry)
            checked = run_step(steps.preflight_target, context, "production", run=run)
            checked["perf_baseline"] = run_step(steps.baseline_production_perf, context, run=run)
            return checked

        @task(pool=FLEET_POOL)
        def apply(entry: dict, **context) -> dict:
            turn = context["ti"].xcom_pull(
                task_ids="target.wait_for_turn", map_indexes=context["ti"].map_index
            )
            timeout = steps.production_statement_timeout(turn["predicted_lock_s"])
            return run_step(
                steps.apply_target, context, "production", statement_timeout_s=timeout,
                run=_target_run(context, entry),
            )  # fmt: skip

        @task(pool=FLEET_POOL)
        def validate(entry: dict, **context) -> dict:
            return run_step(steps.validate, context, "production", run=_target_run(context, entry))

        @task(pool=FLEET_POOL)
        def monitor(entry: dict, **context) -> dict:
            return run_step(steps.monitor_production_perf, context, run=_target_run(context, entry))

        chain(wait_for_turn(entry), preflight(entry), apply(entry), validate(entry), monitor(entry))

    @task(trigger_rule="all_done", pool=FLEET_POOL)
    def rollback_target(entry: dict, **context) -> dict:
        """A failed target is rolled back; with rollback_all, every applied one too."""
        settings = fleet_from_context(context)
        plan = context["ti"].xcom_pull(task_ids="preflight")["plan"]
        why = fleet_steps.rollback_reason(
            settings, plan, context["ti"].map_index, task_states(context)
        )
        if why is None:
            raise AirflowSkipException(f"{entry['conn_id']}: left as it is")
        run = _target_run(context, entry)
        run.say(f"rollback {entry['conn_id']}: {why}")
        return rollback_or_skip(run, "production", context)

    @task(trigger_rule="all_done")
    def report(**context) -> dict:
        """Always: each target's final state and why; the run fails unless every target is
        applied and healthy."""
        run = run_from_context(context)
        states = task_states(context)
        checked = context["ti"].xcom_pull(task_ids="preflight")
        plan = checked["plan"] if checked else []
        target_runs = [_target_run(context, entry) for entry in plan]
        summary = fleet_steps.write_fleet_report(run, plan, target_runs, states)
        send_outcome(
            context, run, summary["outcome"],
            {row["conn_id"]: row["state"] for row in summary["targets"]},
        )  # fmt: skip
        if summary["outcome"] != "succeeded":
            raise AirflowFailException(f"fleet rollout {summary['outcome']} (see summary.md)")
        return summary

    # The story, in order.
    checked = preflight()
    staging = (
        staging_tasks()
    )  # apply_staging, validate_staging, capture_db_diff, run_assignment_tests
    gate = ProductionApproval(task_id="approve_production")
    chain(checked, *staging, gate)
    plan = plan_targets()
    gates = wave_gate.expand(wave=plan_wave_gates())
    targets = production_target.expand(entry=plan)
    gate >> [plan, gates]
    rollbacks = rollback_target.expand(entry=plan)
    [targets, gates] >> rollbacks
    staging_rollback = rollback_staging_task()
    [*staging, gate] >> staging_rollback
    [checked, *staging, gate, plan, gates, targets, rollbacks, staging_rollback] >> report()

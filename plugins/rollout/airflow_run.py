"""A `Run` built from an Airflow task's context: the run's settings (its trigger parameters), its
targets (Airflow connections), its artifact folder, who triggered it and which task commits;
and what a task needs to know of its run (task states, when it started)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from rollout.airflow_paths import run_artifacts
from rollout.artifacts import ArtifactDir
from rollout.dsn import MalformedDsn
from rollout.errors import TargetUnavailable
from rollout.fleet import FleetSettings
from rollout.run import Run
from rollout.settings import RolloutSettings
from rollout.targets import resolve_target

log = logging.getLogger("rollout")


def settings_from_context(context: Any) -> RolloutSettings:
    params = dict(context["params"])
    if "production_targets" in params:  # the fleet DAG: production is its first target here
        return fleet_from_context(context).rollout
    return RolloutSettings.from_params(params)


def fleet_from_context(context: Any) -> FleetSettings:
    return FleetSettings.from_params(dict(context["params"]))


def fleet_dsns(settings: FleetSettings) -> dict[str, str]:
    """Every production target's DSN: a connection that is not defined fails here, named."""
    return {conn_id: resolve_target(conn_id) for conn_id in settings.targets}


def run_from_context(context: Any) -> Run:
    """Settings first (a bad parameter fails before any database is touched), then targets: a
    connection that is not defined fails the first step that connects to it, naming it."""
    return _run(context, settings_from_context(context))


def run_or_why_not(context: Any) -> tuple[Run | None, str | None]:
    """For the report and the rollbacks, which must never crash: the run, or why there is none
    (its parameters were refused: then it touched nothing)."""
    from rollout.errors import RolloutError

    try:
        return run_from_context(context), None
    except RolloutError as exc:
        return None, str(exc)


def _run(context: Any, settings: RolloutSettings) -> Run:
    import os
    import socket

    dag_run, ti = context["dag_run"], context["ti"]
    dsns = {
        "staging": dsn_or_why_not(settings.staging_conn_id),
        "production": dsn_or_why_not(settings.production_conn_id),
    }
    return Run(
        settings=settings,
        dsns=dsns,
        artifacts=ArtifactDir(run_artifacts(dag_run.dag_id, dag_run.run_id)),
        run_id=dag_run.run_id,
        actor=getattr(dag_run, "triggering_user_name", None),
        progress=log.info,
        dag_id=dag_run.dag_id,
        session={
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "dag_id": dag_run.dag_id,
            "task_id": ti.task_id,
            "map_index": getattr(ti, "map_index", -1),
            "try_number": getattr(ti, "try_number", None),
        },
        is_stale=lambda lease: lease_is_stale(ti, lease),
        watch_worker=True,
    )


class MissingTarget(str):
    """A target whose connection could not be resolved: connecting to it raises the reason."""


def dsn_or_why_not(conn_id: str) -> str:
    """The connection's DSN, or a MissingTarget carrying why there is none: the first step that
    connects fails with it, and the report and rollbacks still run."""
    try:
        return resolve_target(conn_id)
    except (TargetUnavailable, MalformedDsn) as exc:  # a connection its fields make unusable
        return MissingTarget(str(exc))


def lease_is_stale(ti: Any, lease: Any) -> str | None:
    """Why another run's lease is stale: its DAG run in this Airflow has ended. A run this
    Airflow does not know (another deployment's, or the CLI's) is never assumed stale."""
    if not lease.dag_id:
        return None
    try:
        state = ti.get_dagrun_state(lease.dag_id, lease.run_id)
    except Exception:  # not found here, or no answer: not ours to judge
        return None
    state = str(getattr(state, "value", state))
    return f"its run ended: {state}" if state in ("success", "failed") else None


def task_states(context: Any) -> dict[str, str]:
    """The state of every task of this run, by task id."""
    ti = context["ti"]
    dag_run = context["dag_run"]
    found = ti.get_task_states(dag_id=dag_run.dag_id, run_ids=[dag_run.run_id])
    states = found.get(dag_run.run_id, found) if isinstance(found, dict) else {}
    return {task: str(getattr(state, "value", state)) for task, state in states.items()}


def run_started(context: Any) -> dt.datetime:
    return context["dag_run"].start_date or dt.datetime.now(dt.UTC)

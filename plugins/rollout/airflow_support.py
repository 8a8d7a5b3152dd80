"""What the DAG needs from Airflow and nothing else does: a `Run` built from a task's context,
the run's artifact folder in object storage, the approval gate, and task states for the report."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import ObjectStoragePath

from rollout.artifacts import ArtifactDir
from rollout.errors import TargetUnavailable
from rollout.fleet import FleetSettings
from rollout.paths import STATE_DIR
from rollout.settings import RolloutSettings
from rollout.steps import Run, approval_body, predict_production_lock
from rollout.targets import resolve_target

log = logging.getLogger("rollout")

URL_PREFIX = "/rollout"  # where the plugin serves the artifact pages (rollout_plugin.py)
ARTIFACTS_URL_ENV = "ROLLOUT_ARTIFACTS_URL"  # e.g. s3://bucket/rollouts (needs its provider)


def artifacts_base() -> ObjectStoragePath:
    url = os.environ.get(ARTIFACTS_URL_ENV) or f"file://{STATE_DIR / 'artifacts'}"
    return ObjectStoragePath(url)


def safe_run_id(run_id: str) -> str:
    """The run id as one path segment (run ids hold ':' and '+'). Never '.', '..' or hidden:
    Airflow accepts a run id such as '..', and its folder must still be the run's own."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
    return "_" + name[1:] if name.startswith(".") else name or "_"


# A DAG id as a folder name. Airflow accepts dag ids such as '..' (letters, digits, '_', '.',
# '-'); ours are plain words, so anything that could name another folder is refused.
DAG_FOLDER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def safe_dag_id(dag_id: str) -> str:
    """The DAG id as one path segment, or ValueError when it could leave the artifacts root."""
    if not DAG_FOLDER.fullmatch(dag_id) or ".." in dag_id:
        raise ValueError(f"the DAG id {dag_id!r} cannot name a folder of artifacts")
    return dag_id


def run_artifacts(dag_id: str, run_id: str) -> Any:
    """The run's folder of artifacts: always one level under the DAG's, two under the root."""
    return artifacts_base() / safe_dag_id(dag_id) / safe_run_id(run_id)


def fail_task(context: Any, exc: Exception, folder: ArtifactDir | None = None) -> Exception:
    """The exception that fails a task for a known reason: no retry, and the reason kept in the
    run's artifacts (failures/<task>.txt, in `folder` when given: a fleet target's own) for the
    report and the person reading it."""
    from airflow.sdk.exceptions import AirflowFailException

    keep_reason(context, "failures", str(exc), folder)
    log.error("%s", exc)
    return AirflowFailException(str(exc))


def skip_task(context: Any, why: str, folder: ArtifactDir | None = None) -> Exception:
    """The exception that skips a task, its reason kept (notes/<task>.txt) for the report: a
    rollback that left another run's work in place says so in the summary."""
    from airflow.sdk.exceptions import AirflowSkipException

    keep_reason(context, "notes", why, folder)
    log.info("%s", why)
    return AirflowSkipException(why)


def keep_reason(context: Any, kind: str, text: str, folder: ArtifactDir | None = None) -> None:
    folder = folder or fail_safe_artifacts(context)
    if folder is None:
        return
    try:
        task = context["ti"].task_id.rsplit(".", 1)[-1]
        folder.write_text(f"{kind}/{task}.txt", f"{text}\n")
    except OSError as write_error:  # the reason still reaches the task log
        log.warning("could not keep the task's reason: %s", write_error)


def run_page_path(dag_id: str, run_id: str) -> str:
    """The run's artifact page under Airflow's address (ids percent-encoded, ':' and '+' kept
    as Airflow's own run ids use them)."""
    from urllib.parse import quote

    return f"{URL_PREFIX}/runs/{quote(dag_id, safe='')}/{quote(run_id, safe=':+~')}/"


def run_page_url(dag_id: str, run_id: str) -> str:
    """The run's artifact page as a person opens it ([api] base_url in front)."""
    from airflow.sdk.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}{run_page_path(dag_id, run_id)}"


def run_step(step: Any, context: Any, *args: Any, run: Run | None = None, **kwargs: Any) -> Any:
    """Run one step of rollout.steps for this task (on `run`, default the run's own): say what
    it does and how long it took; a known failure (RolloutError) fails the task with its reason
    kept, without retry."""
    import time

    from rollout.errors import RolloutError

    task_id = context["ti"].task_id
    started = time.monotonic()
    log.info("%s: starting", task_id)
    try:
        run = run or run_from_context(context)
        result = step(run, *args, **kwargs)
    except RolloutError as exc:
        log.info("%s: failed after %.1f s", task_id, time.monotonic() - started)
        raise fail_task(context, exc, run.artifacts if run else None) from exc
    log.info("%s: done in %.1f s", task_id, time.monotonic() - started)
    return result


def fail_safe_artifacts(context: Any) -> ArtifactDir | None:
    """The run's artifact folder, or None when it cannot be opened (for best-effort records)."""
    dag_run = context["dag_run"]
    try:
        return ArtifactDir(run_artifacts(dag_run.dag_id, dag_run.run_id))
    except OSError as exc:
        log.warning("the run's artifact folder cannot be opened: %s", exc)
        return None


def send_outcome(
    context: Any, version: str, outcome: str, states: dict[str, str] | None = None
) -> None:
    """The one message at the end of a run: outcome, version, each target's state, the link."""
    from rollout.notify import Notice, send

    dag_run = context["dag_run"]
    lines = [f"Rollout of {version}: {outcome}.", ""]
    lines += [f"- {target}: {state}" for target, state in (states or {}).items()]
    send(
        Notice(
            kind="outcome",
            subject=f"Rollout {version}: {outcome}",
            message="\n".join(lines),
            link=run_page_url(dag_run.dag_id, dag_run.run_id),
        ),
        context,
    )


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
    except TargetUnavailable as exc:
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


def window_poke(context: Any, run: Run, predict: Any, untouched: str) -> Any:
    """A window sensor's answer: done when the maintenance window is open and the predicted
    lock (`predict()`, seconds) fits; fails, keeping the reason, when it never will."""
    from airflow.sdk import PokeReturnValue

    from rollout.errors import RolloutError
    from rollout.steps import StepFailed, check_window

    try:
        predicted = predict()
        decision = check_window(run, predicted, run_started(context))
        run.say(f"maintenance window: {decision.reason}")
        if decision.action == "refuse":
            raise StepFailed(f"{decision.reason}; {untouched} untouched")
    except RolloutError as exc:
        raise fail_task(context, exc) from exc
    return PokeReturnValue(
        is_done=decision.action == "go",
        xcom_value={"predicted_lock_s": round(predicted, 3), "reason": decision.reason},
    )


def assigned_users(settings: RolloutSettings, triggered_by: str | None) -> list[dict[str, str]]:
    """The gate's assignees (Airflow refuses anyone else's answer with 403); the person who
    triggered the run is never one, unless four eyes are waived."""
    return [{"id": u, "name": u} for u in settings.approval_assignees(triggered_by)]


class ProductionApproval(ApprovalOperator):
    """The production gate: Airflow's own approval operator (Approve / Reject in the UI, the
    same call over the REST API), with its text, assignees and deadline taken from the run.

    Reject fails the gate (fail_on_reject) and so does no answer in time: either way the run's
    rollback policy for staging applies and the run ends failed, never quietly succeeded."""

    def __init__(self, **kwargs: Any) -> None:
        from rollout.notify import ApprovalWaitingNotifier

        super().__init__(
            subject="Apply the migration to production?",
            body="(filled in when the gate opens)",
            fail_on_reject=True,
            notifiers=[ApprovalWaitingNotifier()],
            **kwargs,
        )

    def execute(self, context: Any) -> Any:
        run = run_from_context(context)
        s = run.settings
        facts = {
            task: context["ti"].xcom_pull(task_ids=task)
            for task in ("preflight", "apply_staging", "validate_staging", "capture_db_diff",
                         "run_assignment_tests")
        }  # fmt: skip
        facts["predicted_lock_s"] = predict_production_lock(
            facts["apply_staging"], facts["preflight"]
        )
        self.subject = f"Apply {run.bundle.path.name} to production?"
        dag_run = context["dag_run"]
        self.body = approval_body(run, facts, run_page_url(dag_run.dag_id, dag_run.run_id))
        self.response_timeout = dt.timedelta(hours=s.approval_timeout_h)
        self.assigned_users = assigned_users(s, run.actor)
        log.info("approval requested: %s", self.subject)
        log.info("%s", self.body)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """Who answered, what and when, kept in the run's artifacts (approval.json) for the
        summary, before the answer takes effect (Reject raises)."""
        record_answer(context, event)
        return super().execute_complete(context, event)


def record_answer(context: Any, event: dict[str, Any]) -> None:
    folder = fail_safe_artifacts(context)
    if folder is None:
        return
    if "error" in event:
        answer = {"answer": "timed out" if event.get("error_type") == "timeout" else "error",
                  "detail": str(event.get("error")), "at": dt.datetime.now(dt.UTC).isoformat()}  # fmt: skip
    else:
        user = event.get("responded_by_user") or {}
        at = event.get("responded_at")
        answer = {
            "answer": ", ".join(event.get("chosen_options") or []),
            "by": user.get("name") or user.get("id") if isinstance(user, dict) else str(user),
            "by_id": user.get("id") if isinstance(user, dict) else None,
            "at": at.isoformat() if hasattr(at, "isoformat") else str(at),
            "task": context["ti"].task_id,
        }
    try:
        folder.write_json("approval.json", answer)
    except OSError as exc:
        log.warning("could not keep the approval's answer: %s", exc)


class WaveApproval(ApprovalOperator):
    """The gate before wave `wave` of a fleet (with approve_each_wave): the previous wave's
    results in front of the person. Reject, or no answer in time, starts no further target."""

    def __init__(self, *, wave: int, **kwargs: Any) -> None:
        from rollout.notify import ApprovalWaitingNotifier

        super().__init__(
            subject=f"Start wave {wave}?",
            body="(filled in when the gate opens)",
            fail_on_reject=True,
            notifiers=[ApprovalWaitingNotifier()],
            **kwargs,
        )
        self.wave = wave

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowSkipException

        from rollout.fleet import wave_summary

        settings = fleet_from_context(context)
        plan = context["ti"].xcom_pull(task_ids="preflight")["plan"]
        members = [t["conn_id"] for t in plan if t["wave"] == self.wave]
        if not members:
            raise AirflowSkipException(f"the plan has no wave {self.wave}")
        if not settings.approve_each_wave:
            raise AirflowSkipException("approve_each_wave is off: the wave starts by itself")
        previous = wave_summary(plan, self.wave - 1, task_states(context))
        dag_run = context["dag_run"]
        waves = len(settings.waves)
        self.subject = (
            f"Start wave {self.wave} of {waves - 1} after the canary ({len(members)} targets)?"
        )
        self.body = "\n".join(
            [
                f"Wave {self.wave - 1} of the rollout of **{settings.rollout.bundle.path.name}** "
                "is done:",
                "",
                *(f"- {conn_id}: {state}" for conn_id, state in previous.items()),
                "",
                f"Next: {', '.join(members)}.",
                f"Reject (or no answer in {settings.rollout.approval_timeout_h:g} h) → no "
                f"further target starts; applied targets: {settings.on_target_failure}.",
                "",
                f"Artifacts: {run_page_url(dag_run.dag_id, dag_run.run_id)}",
            ]
        )
        self.response_timeout = dt.timedelta(hours=settings.rollout.approval_timeout_h)
        self.assigned_users = assigned_users(settings.rollout, run_from_context(context).actor)
        log.info("approval requested: %s", self.subject)
        return super().execute(context)

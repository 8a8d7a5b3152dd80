"""The Airflow side of the steps: how a task runs a step and ends (failed or skipped, its reason
kept for the report), the end-of-run notice, the window sensor's answer, and the approval gates
(Airflow's own ApprovalOperator, given the run's text, assignees and deadline)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from rollout.airflow_paths import fail_safe_artifacts, run_page_url
from rollout.airflow_run import fleet_from_context, run_from_context, run_started, task_states
from rollout.artifacts import ArtifactDir
from rollout.locktime import predict_production_lock
from rollout.report import approval_body
from rollout.run import Run
from rollout.settings import RolloutSettings

log = logging.getLogger("rollout")


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
    except Exception as exc:
        # A reason kept for an unexpected error too: a failed task without one was killed.
        keep_reason(context, "failures", f"unexpected error: {type(exc).__name__}: {exc}")
        raise
    log.info("%s: done in %.1f s", task_id, time.monotonic() - started)
    return result


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


def window_poke(
    context: Any, run: Run, predict: Any, untouched: str, record: str = "window-decision.json"
) -> Any:
    """A window sensor's answer: done when the maintenance window is open and the lock fits
    (the one `predict()` gives for a locking apply, or the online swap's when the apply mode is
    online); fails, keeping the reason, when it never will. The answer carries the apply mode
    and the lock the apply's statement_timeout is sized from; each check's decision and its
    numbers are kept in the run's artifacts (`record`) for the review page."""
    from airflow.sdk import PokeReturnValue

    from rollout.errors import RolloutError
    from rollout.steps import StepFailed, check_window, choose_apply_mode

    facts: dict[str, Any] = {"lock_budget_s": run.settings.lock_budget_s,
                             "window": run.settings.window.describe()}  # fmt: skip
    try:
        predicted = predict()
        facts["predicted_lock_s"] = round(predicted, 3)
        mode = choose_apply_mode(run, predicted)
        facts.update(mode)
        decision = check_window(run, mode["window_lock_s"], run_started(context))
        facts.update(action=decision.action, reason=decision.reason)
        run.say(f"maintenance window: {decision.reason}; apply mode {mode['apply_mode']}")
        if decision.action == "refuse":
            raise StepFailed(f"{decision.reason}; {untouched} untouched")
    except RolloutError as exc:
        facts.update(action="refuse", reason=facts.get("reason") or str(exc))
        keep_decision(run, record, facts)
        raise fail_task(context, exc) from exc
    keep_decision(run, record, facts)
    return PokeReturnValue(
        is_done=decision.action == "go",
        xcom_value={"predicted_lock_s": round(predicted, 3), "reason": decision.reason, **mode},
    )


def keep_decision(run: Run, name: str, facts: dict[str, Any]) -> None:
    """A decision and the numbers it rests on, kept for the review page (best effort: the
    decision itself never fails for want of a file)."""
    try:
        run.artifacts.write_json(name, {**facts, "at": dt.datetime.now(dt.UTC).isoformat()})
    except OSError as exc:
        log.warning("could not keep %s: %s", name, exc)


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
        from rollout.errors import RolloutError

        run = run_from_context(context)
        try:  # nobody is asked to approve bytes other than those staging ran
            run.require_unchanged_bundle("the approval")
        except RolloutError as exc:
            raise fail_task(context, exc, run.artifacts) from exc
        s = run.settings
        facts = {
            task: context["ti"].xcom_pull(task_ids=task)
            for task in ("preflight", "apply_staging", "validate_staging", "capture_db_diff",
                         "run_assignment_tests", "check_window_and_budget")
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
        # What the approver is shown, as shown: the review page puts it beside the answer.
        keep_decision(run, "approval-request.json", {
            "subject": self.subject, "body": self.body, "timeout_h": s.approval_timeout_h,
            "assignees": [u["name"] for u in self.assigned_users],
        })  # fmt: skip
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
        if event.get("params_input"):  # what the person filled in beside the option, if asked
            answer["params_input"] = event["params_input"]
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

        from rollout.errors import RolloutError
        from rollout.fleet import wave_summary

        settings = fleet_from_context(context)
        plan = context["ti"].xcom_pull(task_ids="preflight")["plan"]
        members = [t["conn_id"] for t in plan if t["wave"] == self.wave]
        if not members:
            raise AirflowSkipException(f"the plan has no wave {self.wave}")
        if not settings.approve_each_wave:
            raise AirflowSkipException("approve_each_wave is off: the wave starts by itself")
        run = run_from_context(context)
        try:  # a later wave is asked about the bytes the canary ran, or not at all
            run.require_unchanged_bundle(f"wave {self.wave}'s approval")
        except RolloutError as exc:
            raise fail_task(context, exc, run.artifacts) from exc
        previous = wave_summary(plan, self.wave - 1, task_states(context))
        dag_run = context["dag_run"]
        waves = len(settings.waves)
        self.subject = (
            f"Start wave {self.wave} of {waves - 1} after the canary ({len(members)} targets)?"
        )
        self.body = "\n".join(
            [
                f"Wave {self.wave - 1} of the rollout of **{run.bundle.path.name}** (checksum "
                f"`{run.bundle.checksum[:12]}`, the bytes every wave applies) is done:",
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
        self.assigned_users = assigned_users(settings.rollout, run.actor)
        log.info("approval requested: %s", self.subject)
        return super().execute(context)

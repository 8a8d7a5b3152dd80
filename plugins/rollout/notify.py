"""Telling the people around a rollout: an approval is waiting, and how the rollout ended.

Airflow's own notifier mechanism carries both: `RolloutNotifier` is a `BaseNotifier`, given to
the approval gate (`notifiers=`) and called by the report at the end. By default it writes a
log line and a Markdown file in the run's artifacts (`notifications/`). The providers'
notifiers (SMTP, Slack, email, ...) are added by configuration only, with the environment
variable ROLLOUT_NOTIFIERS, a JSON list of

    {"class": "airflow.providers.smtp.notifications.smtp.SmtpNotifier",
     "kwargs": {"to": "dba@example.com", "from_email": "rollout@example.com",
                "subject": "{subject}", "html_content": "<pre>{message}</pre>",
                "smtp_conn_id": "smtp_default"}}

where {subject}, {message} and {link} in any string are filled in for each notification.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from airflow.sdk import BaseNotifier

from rollout.artifacts import list_tree
from rollout.errors import RolloutError

log = logging.getLogger("rollout")
NOTIFIERS_ENV = "ROLLOUT_NOTIFIERS"


@dataclass(frozen=True)
class Notice:
    kind: str  # "approval" or "outcome"
    subject: str
    message: str
    link: str


def configured_notifiers() -> list[dict[str, Any]]:
    raw = os.environ.get(NOTIFIERS_ENV, "").strip()
    if not raw:
        return []
    try:
        specs = json.loads(raw)
        assert isinstance(specs, list) and all("class" in s for s in specs)
    except (ValueError, AssertionError):
        raise RolloutError(
            f'{NOTIFIERS_ENV} must be a JSON list of {{"class": ..., "kwargs": {{...}}}}'
        ) from None
    return specs


def _fill(value: Any, notice: Notice) -> Any:
    if isinstance(value, str):
        return (
            value.replace("{subject}", notice.subject)
            .replace("{message}", notice.message)
            .replace("{link}", notice.link)
        )
    if isinstance(value, list):
        return [_fill(v, notice) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, notice) for k, v in value.items()}
    return value


def send(notice: Notice, context: Any) -> None:
    """The default record (log line + Markdown artifact), then every configured notifier. A
    notifier that fails is logged, never fails the rollout: the record is already kept."""
    from rollout.airflow_paths import fail_safe_artifacts

    log.info("notification (%s): %s — %s", notice.kind, notice.subject, notice.link)
    artifacts = fail_safe_artifacts(context)
    if artifacts is not None:
        existing = list_tree(artifacts.path("notifications"))
        artifacts.write_text(
            f"notifications/{len(existing) + 1:02d}-{notice.kind}.md",
            f"# {notice.subject}\n\n{notice.message}\n\n{notice.link}\n",
        )
    for spec in configured_notifiers():
        module, _, name = spec["class"].rpartition(".")
        try:
            notifier_class = getattr(importlib.import_module(module), name)
            notifier = notifier_class(**_fill(spec.get("kwargs", {}), notice))
            notifier.notify(context)
        except Exception as exc:
            log.warning("notifier %s failed: %s", spec["class"], exc)


class ApprovalWaitingNotifier(BaseNotifier):
    """Given to the approval gate: fires once, when it starts waiting."""

    def notify(self, context: Any) -> None:
        from airflow.providers.standard.operators.hitl import HITLOperator

        gate = context["task"]
        deadline = gate.hitl_summary_extra.get("timeout_datetime") or "none"
        link = HITLOperator.generate_link_to_ui_from_context(context=context)
        send(
            Notice(
                kind="approval",
                subject=f"Approval waiting: {gate.subject}",
                message=f"{gate.body}\n\nAnswer by: {deadline} (no answer counts as a rejection).",
                link=link,
            ),
            context,
        )

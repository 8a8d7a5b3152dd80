"""A run's settings: the DAG's trigger parameters, checked once, before anything is touched.

`PARAM_SCHEMA` is what the trigger form shows and what Airflow validates on trigger;
`RolloutSettings.from_params` checks what a JSON schema cannot (the bundle exists, the time
zone is real, the window makes sense) and names the field that is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from rollout.errors import RolloutError
from rollout.lock_retries import LockRetries
from rollout.migrations import MigrationBundle, load_bundle
from rollout.window import MaintenanceWindow, WindowError


class SettingsError(RolloutError):
    """A trigger parameter that cannot be used; the message names it."""


# A connection id names a folder of the run's artifacts (a fleet target's targets/<conn_id>/)
# and an AIRFLOW_CONN_<ID> variable: letters, digits, '_', '.' and '-', not first a '.' or '-',
# never '..'. Anything else could name another folder than the target's own.
CONN_ID_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.-]{0,249}$"


def check_conn_id(value: Any, field: str) -> str:
    """The connection id, or SettingsError naming `field` and what a usable id looks like."""
    if not isinstance(value, str) or not re.fullmatch(CONN_ID_PATTERN, value):
        raise SettingsError(
            f"{field}: {value!r} is not a usable connection id: use letters, digits, '_', '.' "
            "and '-' (not first a '.' or '-', never '..', no '/'); it also names a folder of "
            "the run's artifacts"
        )
    return value


# name -> (default, JSON schema, description). The DAG turns these into airflow.sdk.Param.
PARAM_SCHEMA: dict[str, tuple[Any, dict[str, Any], str]] = {
    "version": (
        None,  # None, not "": the trigger form treats an empty string as a missing value
        {"type": ["null", "string"], "pattern": r"^\d{14}$"},
        "Migration bundle version (14 digits); empty for the newest in sql/migrations/.",
    ),
    "staging_conn_id": (
        "rollout_staging",
        {"type": "string", "minLength": 1, "pattern": CONN_ID_PATTERN},
        "Staging target.",
    ),
    "production_conn_id": (
        "rollout_production",
        {"type": "string", "minLength": 1, "pattern": CONN_ID_PATTERN},
        "Production target.",
    ),
    "window_kind": ("once", {"type": "string", "enum": ["once", "daily"]}, "One-off or daily."),
    "window_start": (
        "now",
        {"type": "string", "minLength": 1},
        "'now' or 'YYYY-MM-DD HH:MM' (once), 'HH:MM' (daily), local to window_timezone.",
    ),
    "window_minutes": (120, {"type": "integer", "minimum": 1}, "Length of the window."),
    "window_timezone": ("UTC", {"type": "string", "minLength": 1}, "e.g. Europe/London."),
    "on_window_passed": (
        "fail",
        {"type": "string", "enum": ["fail", "wait_next"]},
        "When the lock does not fit what is left: fail, or wait for the next daily window.",
    ),
    # While an attempt waits for the lock, every writer queues behind it: each failed attempt
    # stalls the application this long. The retries, not one long wait, outlast a long reader.
    "lock_timeout_ms": (
        500,
        {"type": "integer", "minimum": 10, "maximum": 600000},
        "How long one attempt waits for the table lock before it gives way to the application.",
    ),
    "lock_retries": (
        5,
        {"type": "integer", "minimum": 0, "maximum": 100},
        "Attempts after the first.",
    ),
    "retry_backoff_s": (
        2.0,
        {"type": "number", "minimum": 0, "maximum": 600},
        "Wait before the first retry; doubles each time.",
    ),
    "lock_budget_s": (
        300.0,
        {"type": "number", "exclusiveMinimum": 0},
        "Largest predicted production lock time the rollout accepts.",
    ),
    "monitor_period_s": (
        60,
        {"type": "integer", "minimum": 0, "maximum": 86400},
        "How long to sample production's queries after the apply.",
    ),
    "regression_threshold": (
        2.0,
        {"type": "number", "exclusiveMinimum": 1},
        "A query's median after / before beyond which it counts as regressed (its server "
        "time, read against a control query timed beside it; see rollout.probes).",
    ),
    "on_reject": (
        "rollback_staging",
        {"type": "string", "enum": ["rollback_staging", "keep_staging"]},
        "What a rejected (or unanswered) approval does to staging.",
    ),
    "on_regression": (
        "rollback_production",
        {"type": "string", "enum": ["rollback_production", "keep"]},
        "What a performance regression in production does.",
    ),
    "approvers": (
        None,  # "null" in the type: the trigger form lets an optional field stay empty
        {"type": ["null", "array"], "items": {"type": "string", "minLength": 1}},
        "Airflow user ids who may approve production (required: four eyes, so never only the "
        "person who triggers the run).",
    ),
    "waive_four_eyes": (
        False,
        {"type": "boolean"},
        "Let anyone with access approve production, the person who triggered the run included. "
        "For a sandbox; never for a real production.",
    ),
    "apply_mode": (
        "auto",
        {"type": "string", "enum": ["auto", "locking", "online"]},
        "How the lock phase runs: locking holds the table for the whole build; online builds it "
        "beside the live table and swaps it in under a short lock (bundles whose manifest "
        "allows it); auto: online in production when its predicted lock exceeds online_above_s.",
    ),
    "online_above_s": (
        5.0,
        {"type": "number", "exclusiveMinimum": 0},
        "With apply_mode auto: the longest production may hold the lock (writers wait that "
        "long) before the online apply is chosen instead.",
    ),
    "staging_has_writers": (
        False,
        {"type": "boolean"},
        "Applications write to staging during the rollout: its row counts are then not "
        "compared exactly (the apply's own row effects still are).",
    ),
    "supabase_history": (
        "auto",
        {"type": "string", "enum": ["auto", "create", "off"]},
        "Supabase CLI's history (supabase_migrations.schema_migrations): auto writes its row "
        "where the table exists, create makes the table when missing, off never touches it.",
    ),
    "approval_timeout_h": (
        24.0,
        {"type": "number", "exclusiveMinimum": 0, "maximum": 720},
        "No answer within this many hours counts as a rejection.",
    ),
}


@dataclass(frozen=True)
class RolloutSettings:
    bundle: MigrationBundle
    staging_conn_id: str
    production_conn_id: str
    window: MaintenanceWindow
    lock_timeout_ms: int
    lock_retries: int
    retry_backoff_s: float
    lock_budget_s: float
    monitor_period_s: int
    regression_threshold: float
    on_reject: str
    on_regression: str
    approvers: list[str] = field(default_factory=list)
    approval_timeout_h: float = 24.0
    staging_has_writers: bool = False
    waive_four_eyes: bool = False
    supabase_history: str = "auto"
    apply_mode: str = "auto"
    online_above_s: float = 5.0

    def approval_assignees(self, triggered_by: str | None) -> list[str]:
        """Who may answer the production gate: the approvers, never the person who triggered
        the run (four eyes); [] means anyone with access, only when waive_four_eyes says so.
        SettingsError, naming the field, when nobody else could answer."""
        if self.waive_four_eyes:
            return list(self.approvers)
        if not self.approvers:
            raise SettingsError(
                "approvers: name the Airflow users who may approve production (four eyes: "
                "someone other than the person who triggers the run); or, for a sandbox only, "
                "set waive_four_eyes deliberately"
            )
        others = [user for user in self.approvers if user != triggered_by]
        if not others:
            raise SettingsError(
                f"approvers: only {triggered_by}, who triggered this run, is named; four eyes "
                "need someone else: add another approver (or, for a sandbox only, set "
                "waive_four_eyes deliberately)"
            )
        return others

    def describe_approvers(self, triggered_by: str | None) -> str:
        """Who may answer, for the gate's text."""
        assignees = self.approval_assignees(triggered_by)
        if not assignees:
            return "anyone with access to this DAG (four eyes waived)"
        mine = triggered_by if triggered_by in self.approvers else None
        excluded = (
            f" (not {mine}, who triggered this run)" if mine and not self.waive_four_eyes else ""
        )
        return ", ".join(assignees) + excluded

    @property
    def lock_retries_policy(self) -> LockRetries:
        """The one lock-retry mechanism's settings for every strong lock this run takes."""
        return LockRetries(
            lock_timeout_ms=self.lock_timeout_ms,
            retries=self.lock_retries,
            backoff_s=self.retry_backoff_s,
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RolloutSettings:
        for name in ("staging_conn_id", "production_conn_id"):
            if name in params:  # before the schema: its pattern's message says less
                check_conn_id(params[name], name)
        _check_schema(params)
        values = {name: params.get(name, default) for name, (default, _, _) in PARAM_SCHEMA.items()}
        if values["staging_conn_id"] == values["production_conn_id"]:
            raise SettingsError(
                "production_conn_id: staging and production must be two different connections"
            )
        try:
            bundle = load_bundle(values["version"] or None)
            from rollout.authoring import require_ready

            require_ready(bundle)  # an imported scaffold runs only once its author finished it
        except RolloutError as exc:
            raise SettingsError(f"version: {exc}") from None
        try:
            window = MaintenanceWindow(
                kind=values["window_kind"],
                start=values["window_start"],
                minutes=values["window_minutes"],
                timezone=values["window_timezone"],
                on_passed=values["on_window_passed"],
            )
        except WindowError as exc:
            raise SettingsError(str(exc)) from None
        values["approvers"] = values["approvers"] or []
        return cls(
            bundle=bundle,
            window=window,
            **{
                k: v
                for k, v in values.items()
                if k not in ("version",) and not k.startswith("window_") and k != "on_window_passed"
            },
        )


def _check_schema(values: Mapping[str, Any]) -> None:
    """The same JSON schema Airflow checks on trigger, checked again here: a run triggered with
    validation off, or a step called by hand, gets the same answer."""
    schema = {
        "type": "object",
        "properties": {name: spec for name, (_, spec, _) in PARAM_SCHEMA.items()},
        "additionalProperties": False,
    }
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(values))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "parameters"
        raise SettingsError(f"{where}: {error.message}")

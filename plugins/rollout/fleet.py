"""A fleet of production targets, rolled out in waves: which targets, in which waves, when a
target may start, and how each one ended.

Plain functions over connection ids and task states, tested without Airflow; the DAG
`fleet_rollout` (dags/fleet_rollout.py) wires them. A target is an Airflow connection id, as
in the single-target rollout. The trigger form names targets three ways:

- a connection id: `prod_eu_1`;
- a glob pattern over the connection ids this tool knows (the fleet file's members and
  `AIRFLOW_CONN_*` variables): `prod_eu_*`;
- a group of the fleet file: `@eu` (`[groups] eu = ["prod_eu_1", "prod_eu_*"]` in
  `fleet.toml`, or the file `ROLLOUT_FLEET_FILE` names).
"""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from rollout.paths import PROJECT_ROOT
from rollout.settings import PARAM_SCHEMA, RolloutSettings, SettingsError, check_conn_id

FLEET_FILE_ENV = "ROLLOUT_FLEET_FILE"
# The DAG lays out this many waves; a plan that needs more is refused at preflight (raise
# wave_size). A fixed chain of waves lets Airflow's own trigger rules hold a wave back until
# the one before is healthy: nothing polls while it waits.
MAX_WAVES = 12
# One task per target (wave_<k>.target, one mapped instance each, named by its connection id)
# runs its steps in order, in one process: a task process costs seconds of start-up, the steps
# of a small target a fraction of one. Each step's end is kept in the target's steps.json.
TARGET_STEPS = ("preflight", "apply", "validate", "monitor")
TARGET_TASK = "target"
ROLLBACK_TASK = "rollback_targets"
FLEET_POOL = "rollout_fleet"  # a target's work takes one of its slots: they bound the fleet


def wave_group(wave: int) -> str:
    return f"wave_{wave}"


def target_task_id(wave: int) -> str:
    """The task id of a wave's targets: wave_<k>.target (one mapped instance per target)."""
    return f"{wave_group(wave)}.{TARGET_TASK}"


FLEET_PARAM_SCHEMA: dict[str, tuple[Any, dict[str, Any], str]] = {
    "production_targets": (
        ["rollout_production"],
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        "Production targets: connection ids, glob patterns (prod_*), or @group of fleet.toml.",
    ),
    "canary_size": (1, {"type": "integer", "minimum": 1}, "Targets in the first wave."),
    "wave_size": (5, {"type": "integer", "minimum": 1}, "Targets in each later wave."),
    "on_target_failure": (
        "leave_healthy",
        {"type": "string", "enum": ["leave_healthy", "rollback_all"]},
        "When a target fails: no new target starts, and the applied ones stay (leave_healthy) "
        "or are rolled back (rollback_all). The failed target itself is always rolled back.",
    ),
    "approve_each_wave": (
        False,
        {"type": "boolean"},
        "A person approves each wave after the canary, the previous wave's results in front.",
    ),
    "data_docs": (
        "canary",
        {"type": "string", "enum": ["canary", "every target"]},
        "Where Great Expectations' Data Docs are rendered: the canary wave's targets (default), "
        "or every target. Every target runs the whole suite and the catalog checks either way; "
        "the rendering costs more than the checks.",
    ),
}
# The fleet DAG's form: the rollout's parameters, production_conn_id replaced by the list.
FLEET_DAG_PARAMS = {
    **{k: v for k, v in PARAM_SCHEMA.items() if k != "production_conn_id"},
    **FLEET_PARAM_SCHEMA,
}


class FleetError(SettingsError):
    """A fleet parameter or fleet file that cannot be used; the message names it."""


def fleet_file() -> Path:
    return Path(os.environ.get(FLEET_FILE_ENV) or PROJECT_ROOT / "fleet.toml")


def load_groups(path: Path | None = None) -> dict[str, list[str]]:
    """The fleet file's groups, or none when there is no file."""
    path = path or fleet_file()
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FleetError(f"fleet file {path}: {exc}") from None
    groups = data.get("groups", {})
    if not isinstance(groups, dict) or not all(
        isinstance(v, list) and all(isinstance(i, str) for i in v) for v in groups.values()
    ):
        raise FleetError(f"fleet file {path}: [groups] maps names to lists of connection ids")
    return groups


def known_connection_ids(
    groups: Mapping[str, list[str]], environ: Mapping[str, str] | None = None
) -> list[str]:
    """What a pattern can match: the plain ids in the fleet file and AIRFLOW_CONN_* variables.
    (Connections kept only in Airflow's database cannot be listed from a task: name them, or
    put them in a group.)"""
    environ = os.environ if environ is None else environ
    found = {
        i for members in groups.values() for i in members
        if not _is_pattern(i) and not i.startswith("@")
    }  # fmt: skip
    found |= {k[len("AIRFLOW_CONN_") :].lower() for k in environ if k.startswith("AIRFLOW_CONN_")}
    return sorted(found)


def _is_pattern(item: str) -> bool:
    return any(c in item for c in "*?[")


# What a pattern may hold: a connection id's characters and fnmatch's. A '/' or '..' would
# never match a usable id, and refusing them says so at once instead of "matches nothing".
PATTERN = re.compile(r"(?!.*\.\.)[A-Za-z0-9_*?\[][A-Za-z0-9_.*?!\[\]-]*")
GROUP = re.compile(r"@[A-Za-z0-9_][A-Za-z0-9_-]*")


def check_target_item(item: str, field: str) -> str:
    """One entry of a target list (an id, a pattern or @group), or FleetError naming `field`."""
    if item.startswith("@"):
        if not GROUP.fullmatch(item):
            raise FleetError(f"{field}: {item!r} is not a group name: @ then letters, digits, '_'")
    elif _is_pattern(item):
        if not PATTERN.fullmatch(item):
            raise FleetError(
                f"{field}: the pattern {item!r} holds characters no connection id has: use "
                "letters, digits, '_', '.', '-' and * ? [ ] (not first a '.' or '-', never "
                "'..', no '/')"
            )
    else:
        try:
            check_conn_id(item, field)
        except SettingsError as exc:
            raise FleetError(str(exc)) from None
    return item


def resolve_targets(
    items: Iterable[str], groups: Mapping[str, list[str]], known: Iterable[str]
) -> list[str]:
    """The connection ids the trigger's list names, in its order, each once."""
    known = sorted(set(known))
    resolved: list[str] = []

    def add(item: str, via: tuple[str, ...] = (), source: str = "") -> None:
        # Each one is checked, group members and a pattern's matches included: a fleet file or
        # an AIRFLOW_CONN_* variable may hold what the trigger form would refuse.
        where = "production_targets" + (f" (group @{via[-1]})" if via else "") + source
        check_target_item(item, where)
        if item.startswith("@"):
            name = item[1:]
            if name not in groups:
                raise FleetError(
                    f"production_targets: no group {name!r} in {fleet_file()}"
                    + (f" (groups: {', '.join(sorted(groups))})" if groups else " (no groups)")
                )
            if name in via:
                raise FleetError(f"production_targets: group {name!r} contains itself")
            for member in groups[name]:
                add(member, (*via, name))
        elif _is_pattern(item):
            matches = fnmatch.filter(known, item)
            if not matches:
                raise FleetError(
                    f"production_targets: the pattern {item!r} matches no known connection id "
                    "(patterns match AIRFLOW_CONN_* variables and the fleet file's members)"
                )
            for match in matches:
                add(match, via, f" (matched by {item!r})")
        elif item not in resolved:
            resolved.append(item)

    for item in items:
        add(item)
    return resolved


def plan_waves(targets: list[str], canary_size: int, wave_size: int) -> list[list[str]]:
    """The canary wave first, then waves of wave_size, in the targets' order."""
    if canary_size < 1 or wave_size < 1:
        raise FleetError("canary_size and wave_size must be at least 1")
    waves = [targets[:canary_size]]
    rest = targets[canary_size:]
    waves += [rest[i : i + wave_size] for i in range(0, len(rest), wave_size)]
    return [w for w in waves if w]


@dataclass(frozen=True)
class FleetSettings:
    rollout: RolloutSettings  # production_conn_id: the first target (the approval's figures)
    targets: list[str]
    canary_size: int
    wave_size: int
    on_target_failure: str
    approve_each_wave: bool
    data_docs: str = "canary"

    def renders_data_docs(self, entry: Mapping[str, Any]) -> bool:
        """Whether this target's validation renders Data Docs (the canary's always do)."""
        return self.data_docs == "every target" or entry["wave"] == 0

    @property
    def waves(self) -> list[list[str]]:
        return plan_waves(self.targets, self.canary_size, self.wave_size)

    def plan(self) -> list[dict[str, Any]]:
        """One entry per target, in order: its wave and its slot (map index) in the wave."""
        return [
            {"conn_id": conn_id, "wave": wave, "slot": slot}
            for wave, members in enumerate(self.waves)
            for slot, conn_id in enumerate(members)
        ]

    @classmethod
    def from_params(
        cls,
        params: Mapping[str, Any],
        groups: Mapping[str, list[str]] | None = None,
        known: Iterable[str] | None = None,
    ) -> FleetSettings:
        fleet = {k: params.get(k, d) for k, (d, _, _) in FLEET_PARAM_SCHEMA.items()}
        schema = {
            "type": "object",
            "properties": {k: spec for k, (_, spec, _) in FLEET_PARAM_SCHEMA.items()},
        }
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft7Validator(schema).iter_errors(fleet)
        )
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "parameters"
            raise FleetError(f"{where}: {error.message}")
        if "production_conn_id" in params:
            raise FleetError(
                "production_conn_id: the fleet rollout names its targets in production_targets"
            )
        groups = load_groups() if groups is None else groups
        known = known_connection_ids(groups) if known is None else known
        targets = resolve_targets(fleet["production_targets"], groups, known)
        rest = {k: v for k, v in params.items() if k not in FLEET_PARAM_SCHEMA}
        staging = rest.get("staging_conn_id", PARAM_SCHEMA["staging_conn_id"][0])
        if staging in targets:
            raise FleetError(
                f"production_targets: {staging!r} is the staging target; it cannot be production"
            )
        rollout = RolloutSettings.from_params({**rest, "production_conn_id": targets[0]})
        waves = plan_waves(targets, fleet["canary_size"], fleet["wave_size"])
        if len(waves) > MAX_WAVES:
            rest_targets = len(targets) - fleet["canary_size"]
            needed = -(-rest_targets // (MAX_WAVES - 1))
            raise FleetError(
                f"wave_size: {len(targets)} targets make {len(waves)} waves, at most {MAX_WAVES} "
                f"run; make wave_size at least {needed}"
            )
        return cls(
            rollout=rollout,
            targets=targets,
            canary_size=fleet["canary_size"],
            wave_size=fleet["wave_size"],
            on_target_failure=fleet["on_target_failure"],
            approve_each_wave=fleet["approve_each_wave"],
            data_docs=fleet["data_docs"],
        )


# --- where each target stands, from the run's task states ----------------------------------

FAILED = ("failed", "upstream_failed")
FINAL_STATES = ("applied", "rolled back", "not applied", "refused")


def target_task_state(states: Mapping[str, str], entry: Mapping[str, Any]) -> str | None:
    """The state of one target's task (instance `slot` of its wave's mapped task)."""
    return states.get(f"{target_task_id(entry['wave'])}_{entry['slot']}")


def target_progress(states: Mapping[str, str], entry: Mapping[str, Any]) -> str:
    """healthy, failed, stopped (skipped: the fleet had stopped) or pending."""
    state = target_task_state(states, entry)
    if state in FAILED:
        return "failed"
    if state == "success":
        return "healthy"
    if state == "skipped":
        return "stopped"
    return "pending"


def failed_targets(plan: list[dict[str, Any]], states: Mapping[str, str]) -> list[str]:
    return [t["conn_id"] for t in plan if target_progress(states, t) == "failed"]


def wave_summary(plan: list[dict[str, Any]], wave: int, states: Mapping[str, str]) -> dict:
    """How the targets of one wave stand: {conn_id: progress}."""
    return {t["conn_id"]: target_progress(states, t) for t in plan if t["wave"] == wave}


def final_state(
    ledger_state: str, task_state: str | None, steps: Mapping[str, str], reason: str | None
) -> tuple[str, str]:
    """(state, why) of one target at the end: applied, not applied, rolled back or refused.

    ledger_state is what the target's ledger says of the version (applied, rolled back, not
    applied); task_state its task's state; steps how each of its steps ended (steps.json,
    rollback included); reason is what its steps left to say (a failure, or why it never
    started)."""
    rollback = steps.get("rollback")
    if rollback == "failed":
        return "refused", reason or "its rollback was refused"
    if ledger_state == "rolled back" and rollback == "success":
        return "rolled back", reason or "rolled back with the fleet (on_target_failure)"
    if steps.get("preflight") == "failed":
        return "refused", reason or "refused before the apply"
    if ledger_state == "applied":
        return "applied", reason or ""
    if task_state is None or task_state == "upstream_failed":
        return "not applied", reason or "never started: an earlier wave did not succeed"
    return "not applied", reason or "never started"

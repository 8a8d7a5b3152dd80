"""A bundle's manifest (`manifest.toml` beside up.sql): what the runner needs to know about the
migration and may not guess.

    [up]
    # Rows of tables that existed before up.sql that it may insert, update or delete
    # ("schema.table", or "*" for any). Counted inside its own transaction.
    may_insert = []
    may_update = []
    may_delete = []

    [down]
    may_insert = []
    may_update = []
    may_delete = []
    # Tables down.sql drops with their rows: exported to the run's artifacts inside the down's
    # own transaction, the count checked against what the drop removes.
    export = ["public.booking_confirmation_results"]

A missing list means "none": a bundle that says nothing may change no row. A top-level
`expectations = "<folder>"` names the folder under expectations/ holding its suites (default:
the bundle's own version).

    [online]
    # The one table whose lock phase (from `-- From here to COMMIT,` on, in up.sql and down.sql)
    # may instead be built on a copy of the table while the application writes, and swapped in
    # under a short lock (apply_mode "online", rollout.online). Without it: locking only.
    table = "public.allocations"
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollout.errors import BundleError

MANIFEST_NAME = "manifest.toml"
_QUALIFIED = re.compile(r"^[a-z_][a-z0-9_$]*\.[a-z_][a-z0-9_$]*$")
_EFFECT_KEYS = ("may_insert", "may_update", "may_delete")


@dataclass(frozen=True)
class RowRules:
    """What one script may do to the rows of tables that existed before it ran."""

    may_insert: tuple[str, ...] = ()
    may_update: tuple[str, ...] = ()
    may_delete: tuple[str, ...] = ()
    export: tuple[str, ...] = ()  # tables it drops, rows exported first (down only)

    def allows(self, kind: str, table: str) -> bool:
        allowed = getattr(self, f"may_{kind}")
        return "*" in allowed or table in allowed

    def describe(self) -> str:
        said = [
            f"{key.removeprefix('may_')}s rows of {', '.join(getattr(self, key))}"
            for key in _EFFECT_KEYS
            if getattr(self, key)
        ]
        return "; ".join(said) if said else "inserts, updates and deletes no row"


@dataclass(frozen=True)
class OnlineSpec:
    """What the bundle allows the online apply to rebuild: its lock phase's one table."""

    table: str  # "schema.table"


@dataclass(frozen=True)
class Manifest:
    up: RowRules
    down: RowRules
    expectations: str | None = None  # folder under expectations/ (default: the version)
    online: OnlineSpec | None = None  # None: the bundle can be applied locking only

    def rules(self, direction: str) -> RowRules:
        return {"up": self.up, "down": self.down}[direction]


def load_manifest(bundle_path: Path) -> Manifest:
    """The manifest of the bundle folder, or a BundleError that says what to fix."""
    path = bundle_path / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(
            f"bundle {bundle_path.name} has no {MANIFEST_NAME}: say what its up and down may do "
            "to existing rows (see README, 'The migration bundle')"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(data) - {"up", "down", "expectations", "online"}
    if unknown:
        raise BundleError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    expectations = data.get("expectations")
    if expectations is not None and not (
        isinstance(expectations, str) and re.fullmatch(r"[A-Za-z0-9_-]+", expectations)
    ):
        raise BundleError(f"{path}: expectations must name a folder under expectations/")
    return Manifest(
        up=_rules(path, "up", data.get("up", {}), export_allowed=False),
        down=_rules(path, "down", data.get("down", {}), export_allowed=True),
        expectations=expectations,
        online=_online(path, data["online"]) if "online" in data else None,
    )


def _online(path: Path, raw: Any) -> OnlineSpec:
    if not isinstance(raw, dict) or set(raw) != {"table"}:
        raise BundleError(f'{path}: [online] takes one key, table = "schema.table"')
    table = raw["table"]
    if not isinstance(table, str) or not _QUALIFIED.match(table):
        raise BundleError(
            f"{path}: [online] table: {table!r} is not a schema-qualified table name in lower "
            "case (e.g. public.allocations)"
        )
    return OnlineSpec(table)


def _rules(path: Path, section: str, raw: Mapping[str, Any], *, export_allowed: bool) -> RowRules:
    keys = (*_EFFECT_KEYS, "export") if export_allowed else _EFFECT_KEYS
    unknown = set(raw) - set(keys)
    if unknown:
        raise BundleError(
            f"{path}: [{section}] has unknown key(s) {', '.join(sorted(unknown))}; known: "
            + ", ".join(keys)
        )
    values = {}
    for key in keys:
        tables = raw.get(key, [])
        if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
            raise BundleError(f"{path}: [{section}] {key} must be a list of table names")
        for table in tables:
            if not (table == "*" and key != "export") and not _QUALIFIED.match(table):
                raise BundleError(
                    f"{path}: [{section}] {key}: {table!r} is not a schema-qualified table name "
                    "in lower case (e.g. public.allocations)"
                    + ("" if key == "export" else ", or '*'")
                )
        values[key] = tuple(tables)
    return RowRules(**values)

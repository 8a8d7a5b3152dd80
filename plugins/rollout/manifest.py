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

    [supabase]            # optional: the Supabase CLI migration file the bundle came from
    version = "20251113203000"
    name = "capacity_overlap_and_confirm_cache"
    source = "supabase.sql"   # that file as written; its statements go in the CLI's history

A missing list means "none": a bundle that says nothing may change no row. At the top level:

- `lock_tables = ["public.allocations"]`: the tables the lock phases take ACCESS EXCLUSIVE.
  They are locked first there (so exports and drops follow the application's lock order), and
  their rows size the lock time, its prediction and the approval's text.
- `application_order = ["public.bookings", …]`: the order in which the application's
  transactions take the tables (a booking first, its allocations after it). A script that drops
  tables locks, at the start of each attempt, every table its statements will lock (lock_tables,
  the dropped tables and the tables their foreign keys link them to), in this order: taking one
  a writer holds while the writer waits for another we hold would deadlock on every attempt.
  Tables it does not name come after, in name order.
- `preflight_checks = ["checks/…sql"]`: this bundle's own checks before anything is changed;
  each query returns the problems it finds (a row each, the first column naming it), its
  first comment line says what is wrong; any row refuses the run at preflight.
- `application_tests = "tests/assignment"`: the application's test suite (pytest) run against
  staging after the apply, in synthetic tenants it makes and removes; absent: none.
- `expectations = "<folder>"`: the folder under expectations/ holding its suites (default: the
  bundle's own version).

    [online]  # optional: apply_mode "online" may rebuild this table beside the live one
    # The one table whose lock phase (from `-- From here to COMMIT,` on, in up.sql and down.sql)
    # may instead be built on a copy of the table while the application writes, and swapped in
    # under a short lock (rollout.online). Without it: locking only.
    table = "public.allocations"

    [lint]    # optional: Squawk's findings (rollout.lint) the author has read and accepts
    accepted = [{rule = "ban-drop-constraint", reason = "replaced by … in the same statement"}]
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
class SupabaseSource:
    version: str
    name: str
    source: str  # the CLI's file, kept in the bundle as written


@dataclass(frozen=True)
class OnlineSpec:
    """What the bundle allows the online apply to rebuild: its lock phase's one table."""

    table: str  # "schema.table"


@dataclass(frozen=True)
class AcceptedFinding:
    """A Squawk rule whose findings in this bundle its author accepts, and why."""

    rule: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    up: RowRules
    down: RowRules
    expectations: str | None = None  # folder under expectations/ (default: the version)
    # Tables the scripts' lock phases take ACCESS EXCLUSIVE: locked first, in this order.
    lock_tables: tuple[str, ...] = ()
    # The order the application's transactions take tables: the down's locks follow it.
    application_order: tuple[str, ...] = ()
    preflight_checks: tuple[str, ...] = ()  # paths relative to the bundle
    application_tests: str | None = None  # a pytest folder relative to the project
    supabase: SupabaseSource | None = None
    online: OnlineSpec | None = None  # None: the bundle can be applied locking only
    lint_accepted: tuple[AcceptedFinding, ...] = ()  # Squawk findings the author accepts

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
    known = {"up", "down", "supabase", "expectations", "lock_tables", "application_order",
             "preflight_checks", "application_tests", "online", "lint"}  # fmt: skip
    unknown = set(data) - known
    if unknown:
        raise BundleError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    expectations = data.get("expectations")
    if expectations is not None and not (
        isinstance(expectations, str) and re.fullmatch(r"[A-Za-z0-9_-]+", expectations)
    ):
        raise BundleError(f"{path}: expectations must name a folder under expectations/")
    lock_tables = data.get("lock_tables", [])
    if not isinstance(lock_tables, list) or not all(
        isinstance(t, str) and _QUALIFIED.match(t) for t in lock_tables
    ):
        raise BundleError(
            f"{path}: lock_tables must list schema-qualified table names (e.g. public.allocations)"
        )
    order = data.get("application_order", [])
    if not isinstance(order, list) or not all(
        isinstance(t, str) and _QUALIFIED.match(t) for t in order
    ):
        raise BundleError(
            f"{path}: application_order must list schema-qualified table names, the order the "
            'application takes them (e.g. ["public.bookings", "public.allocations"])'
        )
    if len(set(order)) != len(order):
        raise BundleError(f"{path}: application_order names a table twice; name each once")
    checks = data.get("preflight_checks", [])
    if not isinstance(checks, list) or not all(_relative_file(c) for c in checks):
        raise BundleError(
            f"{path}: preflight_checks must list .sql files inside the bundle (e.g. "
            '"checks/preflight_on_conflict.sql")'
        )
    tests = data.get("application_tests")
    if tests is not None and not (isinstance(tests, str) and _relative_path(tests)):
        raise BundleError(
            f"{path}: application_tests must name a folder of the project (e.g. "
            '"tests/assignment"), or be left out for none'
        )
    return Manifest(
        up=_rules(path, "up", data.get("up", {}), export_allowed=False),
        down=_rules(path, "down", data.get("down", {}), export_allowed=True),
        expectations=expectations,
        lock_tables=tuple(lock_tables),
        application_order=tuple(order),
        preflight_checks=tuple(checks),
        application_tests=tests,
        supabase=_supabase(path, data.get("supabase")),
        online=_online(path, data["online"]) if "online" in data else None,
        lint_accepted=_lint_accepted(path, data.get("lint", {})),
    )


def _relative_path(value: Any) -> bool:
    return (
        isinstance(value, str)
        and bool(value)
        and not value.startswith("/")
        and ".." not in value.split("/")
    )


def _relative_file(value: Any) -> bool:
    return _relative_path(value) and value.endswith(".sql")


def _supabase(path: Path, raw: Any) -> SupabaseSource | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"version", "name", "source"}:
        raise BundleError(f"{path}: [supabase] needs version, name and source, nothing else")
    if not re.fullmatch(r"[0-9]+", str(raw["version"])) or not _relative_file(raw["source"]):
        raise BundleError(
            f"{path}: [supabase] version is the file's number, source the .sql file in the bundle"
        )
    return SupabaseSource(str(raw["version"]), str(raw["name"]), raw["source"])


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


def _lint_accepted(path: Path, raw: Any) -> tuple[AcceptedFinding, ...]:
    example = '[lint] accepted = [{rule = "ban-drop-constraint", reason = "why it is safe here"}]'
    if not isinstance(raw, dict) or not set(raw) <= {"accepted"}:
        raise BundleError(f"{path}: [lint] takes one key, accepted: {example}")
    entries = raw.get("accepted", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BundleError(f"{path}: [lint] accepted must be a list of tables: {example}")
    accepted = []
    for entry in entries:
        rule = entry.get("rule")
        if not isinstance(rule, str) or not re.fullmatch(r"[a-z][a-z0-9-]*", rule):
            raise BundleError(
                f"{path}: [lint] accepted: {rule!r} is not a Squawk rule name (e.g. "
                f'"ban-drop-constraint", as Squawk names it): {example}'
            )
        unknown = set(entry) - {"rule", "reason"}
        if unknown:
            raise BundleError(
                f"{path}: [lint] accepted {rule}: unknown key(s) {', '.join(sorted(unknown))}; "
                "known: rule, reason"
            )
        reason = entry.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise BundleError(
                f"{path}: [lint] accepted {rule} has no reason: say why its findings are safe "
                'here (reason = "…"), or remove it and let them stand as warnings'
            )
        if rule in {a.rule for a in accepted}:
            raise BundleError(f"{path}: [lint] accepted names {rule} twice: keep one reason")
        accepted.append(AcceptedFinding(rule, reason.strip()))
    return tuple(accepted)


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

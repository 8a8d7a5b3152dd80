"""`rollout status`: what the ledger of each target says, and whether the bundles on disk still
match it, for a person (a table) or a program (JSON, and `--require` as an exit code)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from rollout import db, ledger, supabase
from rollout.dsn import MalformedDsn, check_dsn
from rollout.errors import BundleError, RolloutError
from rollout.migrations import discover_bundles, load_bundle


@dataclass
class TargetStatus:
    target: str
    database: str
    has_ledger: bool
    versions: list[dict[str, Any]] = field(default_factory=list)  # one per version, last state
    # Supabase CLI's history (supabase_migrations.schema_migrations): its versions, or None
    # when the target has no such table.
    supabase: list[str] | None = None
    disagreements: list[str] = field(default_factory=list)


def target_dsn(target: str, source: str = "target") -> str:
    """A DSN as given, or an Airflow connection id read from AIRFLOW_CONN_<ID> (URI or JSON);
    a malformed one is MalformedDsn naming `source` (the flag) or the variable."""
    if "=" in target or "://" in target:
        return check_dsn(target, source)
    variable = f"AIRFLOW_CONN_{target.upper()}"
    raw = os.environ.get(variable)
    if not raw:
        raise RolloutError(
            f"{target!r} is neither a DSN nor a connection defined in AIRFLOW_CONN_{target.upper()}"
        )
    from airflow.models.connection import Connection

    from rollout.targets import dsn_from_connection

    try:
        if raw.lstrip().startswith("{"):
            conn = Connection(conn_id=target, **json.loads(raw))
        else:
            conn = Connection(conn_id=target, uri=raw)
    except Exception as exc:  # Airflow's own parser: JSON, URI or field errors alike
        reason = " ".join(str(exc).replace(raw, "<its value>").split())[:200]
        raise MalformedDsn(
            f"{variable}: not a connection URI or JSON Airflow can read ({reason}); write it as "
            "postgresql://user:password@host:5432/dbname or as JSON with conn_type, host, ..."
        ) from None
    return check_dsn(dsn_from_connection(conn), variable)


def read_status(target: str, dsn: str | None = None) -> TargetStatus:
    return read_status_and_rows(target, dsn)[0]


def read_status_and_rows(
    target: str, dsn: str | None = None
) -> tuple[TargetStatus, list[dict[str, Any]]]:
    """The target's status and every row of its ledger, in one session (the review page shows
    both: the state of each version, and the rows a later run added)."""
    dsn = dsn or target_dsn(target)
    with db.connect(dsn, application_name="rollout-status") as conn:
        status = TargetStatus(target, db.redact(dsn), ledger.has_ledger(conn))
        rows = ledger.history(conn)  # reads only: never creates the ledger
        if supabase.has_history(conn):
            status.supabase = [row["version"] for row in supabase.history(conn)]
    return _with_versions(status, rows), rows


def _with_versions(status: TargetStatus, rows: list[dict[str, Any]]) -> TargetStatus:
    on_disk = {b.version: b for b in discover_bundles()}
    last: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["outcome"] in ("applied", "rolled_back"):
            last[row["version"]] = row
    for version, row in sorted(last.items()):
        bundle = on_disk.get(version)
        if bundle is None:
            on_disk_state = "missing"
        else:
            on_disk_state = "matches" if bundle.checksum == row["checksum"] else "DIFFERS"
        status.versions.append(
            {
                "version": version,
                "state": "applied" if row["outcome"] == "applied" else "rolled back",
                "checksum": row["checksum"],
                "at": row["finished_at"].isoformat(),
                "run_id": row["run_id"],
                "actor": row["actor"],
                "lock_s": row["lock_s"],
                "bundle_on_disk": on_disk_state,
                "supabase": _listed(status, bundle, version),
            }
        )
    status.disagreements = disagreements(status, on_disk)
    return status


def _listed(status: TargetStatus, bundle: Any, version: str) -> str:
    """Whether Supabase's history lists the bundle's migration: listed, missing, or - (no
    history table here)."""
    if status.supabase is None:
        return "-"
    key = bundle.supabase_migration.version if bundle is not None else version
    return "listed" if key in status.supabase else "missing"


def disagreements(status: TargetStatus, on_disk: dict[str, Any]) -> list[str]:
    """Where the two histories disagree, each said as what would go wrong."""
    if status.supabase is None:
        return []

    def key(version: str) -> str:  # the bundle's version in Supabase's history
        bundle = on_disk.get(version)
        return bundle.supabase_migration.version if bundle is not None else version

    found, seen = [], set()
    for entry in status.versions:
        listed = key(entry["version"]) in status.supabase
        seen.add(key(entry["version"]))
        if entry["state"] == "applied" and not listed:
            found.append(
                f"{entry['version']} is applied (rollout ledger) but missing from Supabase's "
                "history: the next `supabase db push` would apply it again"
            )
        elif entry["state"] != "applied" and listed:
            found.append(
                f"{entry['version']} is rolled back (rollout ledger) but Supabase's history "
                "still lists it: `supabase migration list` claims it is deployed"
            )
    ours = {key(version) for version in on_disk}
    found += [
        f"{version} is in Supabase's history but the rollout never applied it here: applied "
        "outside the rollout"
        for version in status.supabase
        if version in ours and version not in seen
    ]
    return found


def require(status: TargetStatus, version: str) -> str | None:
    """None when `version` is applied there with the checksum of the bundle on disk, else the
    one-line reason why not."""
    if not status.has_ledger:
        return f"{status.target}: no rollout ledger (nothing was ever applied by this tool)"
    try:
        bundle = load_bundle(version)
    except BundleError as exc:
        return f"{status.target}: {exc}"
    entry = next((v for v in status.versions if v["version"] == version), None)
    if entry is None:
        return f"{status.target}: {version} has never been applied"
    if entry["state"] != "applied":
        return f"{status.target}: {version} was rolled back at {entry['at']}"
    if entry["checksum"] != bundle.checksum:
        return (
            f"{status.target}: {version} was applied with checksum {entry['checksum'][:12]}, "
            f"but the bundle on disk has {bundle.checksum[:12]}"
        )
    return None


def render_table(statuses: list[TargetStatus]) -> str:
    lines = []
    for status in statuses:
        same = status.target == status.database
        lines.append(status.target if same else f"{status.target}  ({status.database})")
        if not status.has_ledger:
            lines.append("  no rollout ledger: nothing was ever applied here by this tool")
            continue
        if not status.versions:
            lines.append("  the ledger has no applied or rolled back version")
        lines.append(
            f"  {'version':<15} {'state':<12} {'checksum':<13} {'when':<26} {'lock s':>7}  "
            f"{'bundle on disk':<14} {'supabase':<9} run"
        )
        for v in status.versions:
            lock = f"{v['lock_s']:.2f}" if v["lock_s"] is not None else "-"
            lines.append(
                f"  {v['version']:<15} {v['state']:<12} {v['checksum'][:12]:<13} "
                f"{v['at'][:19].replace('T', ' ') + ' UTC':<26} "
                f"{lock:>7}  {v['bundle_on_disk']:<14} {v.get('supabase', '-'):<9} {v['run_id']}"
            )
        if status.supabase is not None:
            lines.append(f"  Supabase history: {', '.join(status.supabase) or 'empty'}")
        lines += [f"  DISAGREES: {d}" for d in status.disagreements]
    return "\n".join(lines)


def render_json(statuses: list[TargetStatus]) -> str:
    return json.dumps([asdict(s) for s in statuses], indent=2, default=str)

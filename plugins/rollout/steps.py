"""The rollout's steps, one function per task of the DAG, callable without Airflow.

Each takes a `Run` (settings, targets, the run's artifact folder, who and which run) and
returns a small JSON-able dict: what the next steps and the report need. A step that cannot go
on raises a RolloutError whose message says what happened and what to do.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from rollout import db, ledger, probes, supabase
from rollout.artifacts import ArtifactDir, list_tree, publish_tree
from rollout.assignment import run_assignment_suite
from rollout.catalog import CatalogCheck
from rollout.diff import capture_db_diff as write_db_diff
from rollout.diff import diff_snapshots, save_snapshot
from rollout.errors import RollbackRefused, RolloutError, TargetUnavailable
from rollout.lock_retries import LockNotGranted
from rollout.locktime import describe_tables, locked_rows, predict_lock_seconds
from rollout.migrations import (
    RowRulesBroken,
    ScriptRun,
    list_down_conflicts,
    preflight_problems,
    run_check,
    run_script,
)
from rollout.schema import snapshot_schema
from rollout.seed import table_row_counts
from rollout.settings import RolloutSettings
from rollout.validation import validate_target
from rollout.worker_watch import WorkerLost, WorkerWatch

Progress = Callable[[str], None]
TARGETS = ("staging", "production")
# statement_timeout of a production apply: this many times the predicted lock, and at least
# STATEMENT_TIMEOUT_FLOOR_S, so a prediction a little low does not abort a healthy apply.
STATEMENT_TIMEOUT_FACTOR = 3.0
STATEMENT_TIMEOUT_FLOOR_S = 60.0
# Every session of a step asks the server to check, this often while a statement runs or waits
# for a lock, that the step's process is still there: a killed task's session ends within it,
# and with it its transaction, its locks and the rollout's advisory lock.
CLIENT_CHECK_INTERVAL = "2s"
# How long a step waits for the database's rollout lock (another step of the same run, or a
# killed one's session not yet ended) before it gives up.
ROLLOUT_LOCK_WAIT_S = 5.0


class StepFailed(RolloutError):
    """A step ran and found something wrong (validation, tests, regression)."""


@dataclass
class Run:
    settings: RolloutSettings
    dsns: dict[str, str]  # target name -> DSN
    artifacts: ArtifactDir  # this run's folder
    run_id: str
    actor: str | None = None
    progress: Progress = field(default=print)
    dag_id: str | None = None
    # Who commits a change (host, pid, task and try): kept in the ledger row.
    session: dict[str, Any] = field(default_factory=dict)
    # Whether another run's lease has gone stale (its run ended); None: never assumed.
    is_stale: ledger.StaleCheck | None = None
    # Airflow tasks: a step stops without committing when its worker process dies.
    watch_worker: bool = False

    @property
    def bundle(self):
        return self.settings.bundle

    def say(self, message: str) -> None:
        self.progress(message)

    def folder(self, target: str, *parts: str) -> ArtifactDir:
        return self.artifacts.subdir("/".join((target, *parts)))

    def dsn(self, target: str) -> str:
        """The target's DSN, or TargetUnavailable saying why there is none (a connection that
        is not defined: the run still reports and rolls back what it can)."""
        dsn = self.dsns.get(target)
        if dsn is None:
            raise TargetUnavailable(f"{target}: this run has no connection for it")
        if type(dsn) is not str:  # an unresolved connection carries its reason, not a DSN
            raise TargetUnavailable(str(dsn))
        return dsn

    def connect(self, target: str, purpose: str) -> psycopg.Connection:
        return db.connect(
            self.dsn(target),
            application_name=session_name(purpose, self.run_id),
            session_settings={"client_connection_check_interval": CLIENT_CHECK_INTERVAL},
        )

    def conn_id(self, target: str) -> str:
        s = self.settings
        return {"staging": s.staging_conn_id, "production": s.production_conn_id}.get(
            target, target
        )


def session_name(purpose: str, run_id: str) -> str:
    """application_name of a step's session: what it does, its process and its run, so a person
    reading pg_stat_activity knows whose it is (PostgreSQL keeps 63 bytes)."""
    return f"rollout-{purpose} p{os.getpid()} {run_id}"[:63]


def default_session() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _read_json(artifacts: ArtifactDir, name: str) -> Any:
    import json

    path = artifacts.path(name)
    if not path.exists():
        raise RolloutError(f"{name} is missing from the run's artifacts: was preflight run?")
    return json.loads(path.read_text())


# --- preflight -----------------------------------------------------------------------------


def preflight(run: Run) -> dict[str, Any]:
    """Both targets reachable, the bundle matching the ledger, no incompatible functions, nobody
    else rolling out; the "before" of each target kept for the diff and a rollback."""
    bundle = run.bundle
    run.say(f"preflight: {bundle.path.name}, checksum {bundle.checksum[:12]}")
    # Four eyes: someone other than the person who triggered the run must be able to approve.
    run.say(
        f"preflight: production may be approved by {run.settings.describe_approvers(run.actor)}"
    )
    result: dict[str, Any] = {"version": bundle.version, "checksum": bundle.checksum}
    s = run.settings
    run.artifacts.write_json(
        "run.json",
        {"run_id": run.run_id, "actor": run.actor, "version": bundle.version,
         "checksum": bundle.checksum, "window": s.window.describe(),
         "targets": {"staging": s.staging_conn_id, "production": s.production_conn_id}},
    )  # fmt: skip
    for target in TARGETS:
        result[target] = preflight_target(run, target)
    return result


def preflight_target(run: Run, target: str) -> dict[str, Any]:
    """One target: reachable, its ledger matching the bundle, no function the migration would
    break, nobody else rolling out there; its row counts and (not yet applied) schema kept."""
    bundle = run.bundle
    with run.connect(target, "preflight") as conn:
        ledger.take_rollout_lock(conn, target, ROLLOUT_LOCK_WAIT_S)  # until this session ends
        hold_lease(run, conn, target)  # until the run's report
        state = ledger.version_state(conn, bundle.version)
        ledger.require_matching_checksum(state, bundle)
        if not state.applied and run.settings.supabase_history != "off":
            migration = bundle.supabase_migration
            if supabase.listed(conn, migration.version):
                raise StepFailed(
                    f"{target}: Supabase's migration history lists {migration.version} but the "
                    "rollout's ledger never applied it: it was applied outside the rollout "
                    "(supabase db push?). Nothing changed; check the schema, then either record "
                    "it as applied or revert it in Supabase's history (supabase migration "
                    "repair --status reverted)"
                )
        problems = preflight_problems(conn, bundle)
        if problems:
            raise StepFailed(
                f"{target}: the bundle's preflight checks refuse the rollout, nothing changed: "
                + "; ".join(problems)
            )
        rows = locked_rows(conn, bundle.manifest.lock_tables)
        folder = run.folder(target, "before")
        # Row counts always (validation compares with them); the schema only while it is
        # the pre-migration one a rollback must return to.
        folder.write_json("row-counts.json", table_row_counts(conn))
        if not state.applied:
            save_snapshot(snapshot_schema(conn), folder, "schema.json")
        run.say(
            f"preflight: {target}: {state.describe()}; {rows:,} rows in "
            f"{describe_tables(bundle.manifest.lock_tables)}"
        )
        return {
            "applied": state.applied,
            "applied_by": state.run_id if state.applied else None,
            "state": state.describe(),
            "locked_rows": rows,
            "server_version": db.server_version(conn),
        }


def hold_lease(run: Run, conn: psycopg.Connection, target: str) -> ledger.Lease:
    """This run holds the target (taken at preflight, kept by each step, released by the
    report); another run holding it refuses the step, naming that run."""
    return ledger.take_lease(
        conn, run_id=run.run_id, dag_id=run.dag_id, target=f"{target} ({run.conn_id(target)})",
        actor=run.actor, is_stale=run.is_stale, say=run.say,
    )  # fmt: skip


def release_leases(run: Run, targets: tuple[str, ...] | list[str] = TARGETS) -> list[str]:
    """The report's last act: give back every target this run holds; what could not be
    reached is said, never raised (a lease left behind is named by the next run)."""
    released = []
    for target in targets:
        try:
            with run.connect(target, "report") as conn:
                if ledger.release_lease(conn, run.run_id):
                    released.append(target)
        except RolloutError as exc:
            run.say(f"{target}: lease not released ({exc})")
    return released


# --- apply ---------------------------------------------------------------------------------


def apply_target(run: Run, target: str, *, statement_timeout_s: float | None = None) -> dict:
    """The up under the lock-retry mechanism; the ledger row in its transaction.

    A re-run after success is a no-op that says so. The up runs only as the bundle the ledger
    would record; what it does to existing rows is checked against its manifest before COMMIT.
    A failure leaves the target unchanged (the transaction rolled back) and is recorded."""
    bundle, s = run.bundle, run.settings
    with run.connect(target, "apply") as conn, WorkerWatch(conn, enabled=run.watch_worker) as watch:
        ledger.take_rollout_lock(conn, target, ROLLOUT_LOCK_WAIT_S)
        hold_lease(run, conn, target)
        ledger.ensure_ledger(conn)
        state = ledger.version_state(conn, bundle.version)
        ledger.require_matching_checksum(state, bundle)
        if state.applied:
            run.say(f"apply {target}: nothing to do, {state.describe()}")
            return {"noop": True, "state": state.describe(), "lock_seconds": state.lock_s,
                    "applied_by": state.run_id}  # fmt: skip
        rows = locked_rows(conn, bundle.manifest.lock_tables)
        retries = s.lock_retries_policy
        settings = {}
        if statement_timeout_s:
            settings["statement_timeout"] = f"{int(statement_timeout_s * 1000)}ms"
        started_at = dt.datetime.now(dt.UTC)
        run.say(
            f"apply {target}: {rows:,} rows in {describe_tables(bundle.manifest.lock_tables)}; "
            f"{retries.describe()}"
        )

        def record(c: psycopg.Connection, done: ScriptRun) -> None:
            watch.check()  # a task its worker lost never commits
            history = supabase.sync(c, bundle.supabase_migration, "up", s.supabase_history)
            ledger.record(
                c, bundle, direction="up", outcome="applied", run_id=run.run_id,
                actor=run.actor, started_at=started_at, duration_s=done.seconds,
                lock_s=done.lock_seconds, row_effects=done.effects.to_json(),
                session=run.session,
                detail=f"attempt {done.attempt} of {retries.attempts}, {rows} rows locked; "
                f"rows: {done.effects.describe()}; {history}",
            )  # fmt: skip

        try:
            result = run_script(
                conn, bundle, "up", retries=retries, settings=settings, before_commit=record,
                say=lambda message: run.say(f"apply {target}: {message}"),
            )  # fmt: skip
        except LockNotGranted as exc:
            why = f"lock not granted in {retries.attempts} attempts of {retries.lock_timeout_ms} ms"
            _record_outcome(run, conn, "up", "failed", why, started_at)
            raise StepFailed(f"apply {target}: {exc} {target} is unchanged.") from None
        except RowRulesBroken as exc:
            _record_outcome(run, conn, "up", "refused", str(exc), started_at)
            raise StepFailed(f"apply {target}: {exc}") from None
        except (WorkerLost, psycopg.Error) as exc:
            if watch.lost.is_set() or isinstance(exc, WorkerLost):
                reason = "the task's worker died; stopped without committing"
            else:
                reason = str(exc).strip().splitlines()[0]
            _record_outcome(run, conn, "up", "failed", reason, started_at)
            raise StepFailed(
                f"apply {target}: {reason}. The transaction rolled back: {target} is unchanged"
            ) from exc
        run_check(conn, bundle, "verify_up")
    run.say(
        f"apply {target}: applied in {result.seconds:.1f} s; "
        f"{describe_tables(bundle.manifest.lock_tables)} locked "
        f"{result.lock_seconds:.2f} s; rows: {result.effects.describe()}"
    )
    return {
        "noop": False,
        "seconds": round(result.seconds, 3),
        "lock_seconds": round(result.lock_seconds, 3),
        "locked_rows": rows,
        "attempts": result.attempts,
        "row_effects": result.effects.describe(),
    }


def _record_outcome(
    run: Run,
    conn: psycopg.Connection,
    direction: str,
    outcome: str,
    detail: str,
    started_at: dt.datetime | None = None,
) -> None:
    """A ledger row for a step that did not commit (failed, refused), in its own transaction."""
    with conn.transaction():
        ledger.record(
            conn, run.bundle, direction=direction, outcome=outcome, run_id=run.run_id,
            actor=run.actor, started_at=started_at or dt.datetime.now(dt.UTC), detail=detail,
            session=run.session,
        )  # fmt: skip


def production_statement_timeout(predicted_lock_s: float) -> float:
    return max(STATEMENT_TIMEOUT_FLOOR_S, predicted_lock_s * STATEMENT_TIMEOUT_FACTOR)


def predict_production_lock(staging_apply: dict, preflight_result: dict) -> float:
    """Staging's measured lock time scaled to production's row count."""
    return predict_target_lock(
        staging_apply,
        preflight_result["staging"]["locked_rows"],
        preflight_result["production"]["locked_rows"],
    )


def predict_target_lock(staging_apply: dict, staging_rows: int, target_rows: int) -> float:
    """Staging's measured lock time scaled to a target's row count (staging's rows as its apply
    counted them, else as preflight did)."""
    measured = staging_apply.get("lock_seconds")
    if measured is None:
        raise RolloutError("staging has no measured lock time (applied outside this tool?)")
    rows = staging_apply.get("locked_rows") or staging_rows
    return predict_lock_seconds(measured, max(rows, 1), target_rows)


# --- validation, diff, tests --------------------------------------------------------------


def validate(run: Run, target: str) -> dict:
    """The bundle's suites and catalog checks on the target, and "nothing lost": what the
    apply did to existing rows (counted in its own transaction, kept in the ledger) against
    the manifest, everywhere; exact row counts too where nobody writes (staging, unless
    staging_has_writers). On a live production, counts taken before the apply prove nothing."""
    folder = run.folder(target, "validation")
    before = run.folder(target, "before")
    quiet = target == "staging" and not run.settings.staging_has_writers
    counts = (
        _read_json(before, "row-counts.json")
        if quiet and before.path("row-counts.json").exists()
        else None
    )
    run.say(
        f"validate {target}: Great Expectations suite, catalog checks, the apply's row effects"
        + (", exact row counts (nobody writes there)" if counts else "")
    )
    started = time.perf_counter()
    with run.connect(target, "validate") as conn:
        rows_check = row_effects_check(conn, run.bundle)
    report = validate_target(
        run.dsn(target), run.bundle.expectations_dir, "post_migration", folder, target=target,
        row_counts=counts, extra_checks=[rows_check],
    )  # fmt: skip
    gx = report.gx
    run.say(
        f"validate {target}: {gx.successful}/{gx.evaluated} expectations, "
        f"{sum(c.passed for c in report.catalog)}/{len(report.catalog)} catalog checks passed "
        f"in {time.perf_counter() - started:.1f} s"
    )
    summary = {
        "success": report.success,
        "expectations": f"{gx.successful}/{gx.evaluated}",
        "catalog": f"{sum(c.passed for c in report.catalog)}/{len(report.catalog)}",
        "row_effects": rows_check.detail,
        "exact_row_counts": bool(counts),
        "failures": report.failures,
    }
    if not report.success:
        raise StepFailed(
            f"validate {target}: {len(report.failures)} check(s) failed: "
            + "; ".join(report.failures[:5])
            + f" (see {target}/validation/validation-report.md)"
        )
    return summary


def row_effects_check(conn: psycopg.Connection, bundle: Any) -> CatalogCheck:
    """What the applied up did to existing rows (its ledger row) against the manifest."""
    from rollout.row_effects import RowEffects

    applied = [
        row
        for row in ledger.history(conn)
        if row["version"] == bundle.version and row["outcome"] == "applied"
    ]
    name = "rows: the apply changed only what manifest.toml allows"
    if not applied:
        return CatalogCheck(
            name, False, "no applied up in the ledger: applied outside the rollout?"
        )
    effects = RowEffects.from_json(applied[-1]["row_effects"])
    if effects is None:
        return CatalogCheck(name, False, "the ledger row has no row counts (an older apply)")
    broken = effects.violations(bundle.manifest.rules("up"), "up.sql")
    return CatalogCheck(name, not broken, "; ".join(broken) or effects.describe())


def capture_db_diff(run: Run) -> dict:
    """Staging before -> after (what the migration changed) and staging before <-> production
    now (drift: production must be what staging was, or staging's proof does not carry).

    When staging was already migrated before this run there is no "before": the change is
    reported as such and the drift compares staging and production as they are."""
    from rollout.diff import load_snapshot_text

    saved = run.folder("staging", "before").path("schema.json")
    with run.connect("staging", "diff") as conn:
        if saved.exists():
            before = load_snapshot_text(saved.read_text())
            change = write_db_diff(
                before, conn, run.artifacts, before_label="staging before",
                after_label="staging after",
            ).summary()  # fmt: skip
        else:
            before = snapshot_schema(conn)
            change = "none in this run (staging was migrated before it)"
            run.artifacts.write_text("db-diff.txt", f"db-diff: {change}\n")
    with run.connect("production", "diff") as conn:
        drift = write_db_diff(
            before, conn, run.artifacts, before_label="staging before",
            after_label="production now", filename="drift-db-diff.txt",
        )  # fmt: skip
    run.say(f"db-diff: staging change {change}; staging/production drift {drift.summary()}")
    return {"change": change, "drift": drift.summary(), "drift_empty": drift.is_empty}


def run_assignment_tests(run: Run) -> dict:
    """The application's own tests of this migration (the bundle's `application_tests`) against
    staging, in synthetic tenants they make and remove; a bundle that names none has none."""
    from rollout.paths import PROJECT_ROOT

    suite = run.bundle.manifest.application_tests
    if suite is None:
        line = "none: the bundle names no application tests"
        run.say(f"application tests: {line}")
        return {"line": line, "passed": 0, "failed": 0, "suite": None}
    run.say(f"application tests ({suite}) against staging (synthetic tenants, removed after)")
    with tempfile.TemporaryDirectory(prefix="rollout-assignment-") as local:
        result = run_assignment_suite(run.dsn("staging"), Path(local), PROJECT_ROOT / suite)
        publish_tree(Path(local), run.folder("staging", "assignment"))
    run.say(f"application tests: {result.line()} in {result.seconds:.1f} s")
    summary = {
        "line": result.line(),
        "passed": result.passed,
        "failed": result.failed + result.errors,
        "suite": suite,
    }
    if not result.success:
        raise StepFailed(
            f"assignment tests: {result.line()}: "
            + "; ".join(result.failures[:5])
            + " (see staging/assignment/assignment-report.md)"
        )
    return summary


# --- the approval's text ---------------------------------------------------------------------


def approval_body(run: Run, facts: dict[str, Any], artifacts_url: str) -> str:
    """What the approver needs, in Markdown: results, the diff, the predicted lock, the window."""
    s = run.settings
    pre, validation = facts["preflight"], facts["validate_staging"]
    diff, tests = facts["capture_db_diff"], facts["run_assignment_tests"]
    predicted = facts["predicted_lock_s"]
    drift = "none" if diff["drift_empty"] else f"**{diff['drift']}** (read drift-db-diff.txt)"
    locked = describe_tables(run.bundle.manifest.lock_tables)
    return "\n".join(
        [
            f"**{run.bundle.path.name}** is on staging and passed its checks.",
            "",
            f"- Validation on staging: {validation['expectations']} expectations, "
            f"{validation['catalog']} catalog checks passed",
            f"- Application tests on staging: {tests['line']}",
            f"- Schema change (db-diff): {diff['change']}; staging/production drift: {drift}",
            *_fleet_lines(pre),
            f"- Production: {pre['production']['locked_rows']:,} rows in {locked}; predicted "
            f"lock on {locked} **{predicted:.1f} s** (budget {s.lock_budget_s:g} s; staging held "
            f"it {facts['apply_staging'].get('lock_seconds') or 0:.2f} s)",
            f"- Maintenance window: {s.window.describe()}",
            f"- After the apply: queries watched for {s.monitor_period_s} s; a median over "
            f"{s.regression_threshold:g}x the baseline → {s.on_regression.replace('_', ' ')}",
            f"- Reject (or no answer in {s.approval_timeout_h:g} h) → production untouched, "
            f"staging: {s.on_reject.replace('_', ' ')}",
            f"- Who may answer: {s.describe_approvers(run.actor)}",
            "",
            f"Artifacts: {artifacts_url}",
        ]
    )


def _fleet_lines(pre: dict[str, Any]) -> list[str]:
    """The fleet rollout's preflight names its targets and waves; the single one does not."""
    if "plan" not in pre:
        return []
    return [
        f"- Fleet: {len(pre['plan'])} production targets in {pre['waves']} waves, canary first; "
        f"a failed target stops the rest (on_target_failure={pre['on_target_failure']}); "
        f"below: the largest, {pre['production']['conn_id']}",
    ]


# --- the window and the lock budget --------------------------------------------------------


def check_before_approval(
    run: Run, predicted_lock_s: float, run_started: dt.datetime, now: dt.datetime | None = None
) -> dict:
    """Ask the approver only about a rollout that can happen: a lock over the budget, a window
    that has passed or can never hold the lock refuse it before anyone is asked (the window
    is checked again after the approval, before the apply)."""
    decision = check_window(run, predicted_lock_s, run_started, now)
    if decision.action == "refuse":
        raise StepFailed(
            f"{decision.reason}: nobody is asked to approve a rollout that cannot happen. "
            "Production untouched, staging kept; trigger again with a window that fits"
        )
    run.say(f"before the approval: predicted lock {predicted_lock_s:.1f} s; {decision.reason}")
    return {"predicted_lock_s": round(predicted_lock_s, 3), "window": decision.reason}


def check_window(
    run: Run, predicted_lock_s: float, run_started: dt.datetime, now: dt.datetime | None = None
):
    """The window's decision; raises when the lock budget is exceeded (no window helps)."""
    if predicted_lock_s > run.settings.lock_budget_s:
        raise StepFailed(
            f"predicted production lock {predicted_lock_s:.1f} s exceeds the lock budget "
            f"{run.settings.lock_budget_s:g} s; production untouched"
        )
    return run.settings.window.decide(now or dt.datetime.now(dt.UTC), run_started, predicted_lock_s)


# --- performance -----------------------------------------------------------------------------


def baseline_production_perf(run: Run) -> dict:
    snapshot = probes.baseline(
        run.dsn("production"), run.folder("production", "perf"), progress=run.say
    )
    return {name: round(s.p50_ms, 3) for name, s in snapshot.stats.items()}


def monitor_production_perf(run: Run) -> dict:
    folder = run.folder("production", "perf")
    before = probes.PerfSnapshot.from_json(_read_json(folder, "perf-baseline.json"))
    s = run.settings
    run.say(f"monitoring production for {s.monitor_period_s} s against the baseline")
    comparison = probes.monitor(
        run.dsn("production"), before, s.monitor_period_s, s.regression_threshold, folder,
        progress=run.say,
    )  # fmt: skip
    run.say(f"monitoring: {comparison.line()}")
    if not comparison.ok:
        raise StepFailed(
            f"performance regression in production: {comparison.line()} (production/perf/perf-monitor.md)"
        )
    return {"line": comparison.line()}


# --- rollback --------------------------------------------------------------------------------


def rollback_target(run: Run, target: str, *, applied_by: str | None = None) -> dict:
    """down.sql, after its own refusal check, verified against the "before" snapshot.

    A rollback undoes only what its own run applied (`applied_by` names another run, for a
    person rolling back deliberately from the CLI), and only with the bundle exactly as it was
    applied: a bundle edited since is never executed. A target this run never changed is left
    as it is, and nothing is created there. Rows that would break the restored constraint →
    refused, with the conflict report; nothing is deleted or edited to make a rollback pass."""
    bundle = run.bundle
    owner = applied_by or run.run_id
    folder = run.folder(target, "rollback")
    with run.connect(target, "rollback") as conn:
        if not ledger.has_ledger(conn):
            run.say(f"rollback {target}: not needed, nothing was ever applied here by this tool")
            return {"action": "not_needed", "why": "nothing was ever applied here"}
        ledger.take_rollout_lock(conn, target, ROLLOUT_LOCK_WAIT_S)
        state = ledger.version_state(conn, bundle.version)
        if not state.applied:
            run.say(f"rollback {target}: not needed, {state.describe()}")
            return {"action": "not_needed", "why": state.describe()}
        if state.run_id != owner:
            why = f"{bundle.version} was applied by run {state.run_id}, not by {owner}: left as is"
            run.say(f"rollback {target}: {why}")
            return {"action": "not_owned", "applied_by": state.run_id, "why": why}
        if state.checksum != bundle.checksum:
            raise ledger.ChecksumMismatch(
                f"rollback {target} refused: the bundle {bundle.path.name} on disk (checksum "
                f"{bundle.checksum[:12]}) is not the one applied ({(state.checksum or '')[:12]}); "
                "an edited down.sql is never executed. Restore the bundle as it was applied from "
                f"version control, then roll back. {target} is unchanged"
            )
        hold_lease(run, conn, target)
        conflicts = list_down_conflicts(conn, bundle)
        if conflicts:
            folder.write_json("down-conflicts.json", conflicts)
            _record_outcome(
                run, conn, "down", "refused", f"{len(conflicts)} conflicting rows (down_conflicts)"
            )
            raise RollbackRefused(
                f"rollback {target} refused: {len(conflicts)} row(s) the bundle's "
                "checks/down_conflicts.sql finds would make the down fail (listed in "
                f"{target}/rollback/down-conflicts.json); nothing was deleted. Resolve them with "
                "the application's owners, then roll back"
            )
        retries = run.settings.lock_retries_policy
        started_at = dt.datetime.now(dt.UTC)

        def keep_export(table: str, data: bytes, rows: int) -> None:
            folder.write_bytes(f"{table.split('.')[-1]}.csv", data)
            run.say(f"rollback {target}: {rows:,} rows of {table} exported before the drop")

        def record(c: psycopg.Connection, done: ScriptRun) -> None:
            exported = ", ".join(f"{n} rows of {t} exported" for t, n in done.exported.items())
            history = supabase.sync(
                c, bundle.supabase_migration, "down", run.settings.supabase_history
            )
            ledger.record(
                c, bundle, direction="down", outcome="rolled_back", run_id=run.run_id,
                actor=run.actor, started_at=started_at, duration_s=done.seconds,
                lock_s=done.lock_seconds, row_effects=done.effects.to_json(),
                session=run.session,
                detail="; ".join(filter(None, [
                    f"attempt {done.attempt} of {retries.attempts}",
                    f"on behalf of run {owner}" if owner != run.run_id else "", exported, history,
                ])),
            )  # fmt: skip

        try:
            result = run_script(
                conn, bundle, "down", retries=retries, before_commit=record,
                keep_export=keep_export, say=lambda message: run.say(f"rollback {target}: {message}"),
            )  # fmt: skip
        except RollbackRefused as exc:
            _record_outcome(run, conn, "down", "refused", str(exc), started_at)
            raise
        except (LockNotGranted, RowRulesBroken) as exc:
            _record_outcome(run, conn, "down", "failed", str(exc).splitlines()[0], started_at)
            raise StepFailed(f"rollback {target}: {exc}") from None
        run_check(conn, bundle, "verify_down")
        after = snapshot_schema(conn)
    before_path = run.folder(target, "before").path("schema.json")
    if before_path.exists():
        from rollout.diff import load_snapshot_text

        before = load_snapshot_text(before_path.read_text())
        diff = diff_snapshots(before, after)
        folder.write_text("db-diff-after-rollback.txt", diff.render("before", "after rollback"))
        if not diff.is_empty:
            raise StepFailed(
                f"rollback {target}: the schema is not what it was before ({diff.summary()}); see "
                f"{target}/rollback/db-diff-after-rollback.txt"
            )
    run.say(
        f"rollback {target}: rolled back in {result.seconds:.1f} s; schema equals the before snapshot"
    )
    return {
        "action": "rolled_back",
        "seconds": round(result.seconds, 3),
        "lock_seconds": round(result.lock_seconds, 3),
        "exported": result.exported,
    }


# --- report ----------------------------------------------------------------------------------


def write_report(run: Run, states: dict[str, str], facts: dict[str, Any]) -> dict:
    """summary.md and summary.html: the outcome, where each target stands and who changed it,
    who answered the approval, each task's state and why, every artifact."""
    outcome = run_outcome(states)
    table = ["| task | state | notes |", "|---|---|---|"]
    for task, state in states.items():
        table.append(
            f"| {task} | {state} | {_note(task_note(run.artifacts, task) or facts.get(task))} |"
        )
    targets = {
        target: target_story(run, target, states.get(f"apply_{target}")) for target in TARGETS
    }
    for target in TARGETS:
        keep_ledger(run, target)
    run.artifacts.write_json(
        "outcome.json", {"outcome": outcome, "states": states, "targets": targets}
    )
    head = [f"- **{target}**: {story}" for target, story in targets.items()]
    approval = approval_record(run.artifacts)
    if approval:
        head.append(f"- **Approval**: {approval}")
    files = write_summary(
        run.artifacts, run.run_id, run.actor, f"Rollout {run.bundle.version}: {outcome}",
        outcome, [*head, "", *table],
    )  # fmt: skip
    run.say(f"report: {outcome}; {len(files)} artifacts")
    return {"outcome": outcome, "artifacts": files, "targets": targets}


def keep_ledger(run: Run, target: str) -> None:
    """The target's ledger as this run left it (`<target>/ledger.json`: every row, this run's
    marked), so a review of the run shows what it did even after later runs changed the
    target. Unreachable: the file says why."""
    try:
        with run.connect(target, "report") as conn:
            rows = ledger.history(conn)
    except RolloutError as exc:
        run.folder(target).write_json("ledger.json", {"error": str(exc), "rows": []})
        return
    for row in rows:
        row["this_run"] = row["run_id"] == run.run_id
    run.folder(target).write_json(
        "ledger.json", {"taken_at": dt.datetime.now(dt.UTC).isoformat(), "rows": rows}
    )


def task_note(artifacts: ArtifactDir, task: str) -> str | None:
    """What a task left to say: why it failed (failures/<task>.txt) or why it did nothing
    (notes/<task>.txt, e.g. a rollback that left another run's work in place)."""
    for folder in ("failures", "notes"):
        path = artifacts.path(f"{folder}/{task}.txt")
        if path.exists():
            return path.read_text().strip()
    return None


def approval_record(artifacts: ArtifactDir) -> str | None:
    """Who answered the production gate, what and when (approval.json, written by the gate)."""
    path = artifacts.path("approval.json")
    if not path.exists():
        return None
    import json

    answer = json.loads(path.read_text())
    if answer.get("answer") == "timed out":
        return f"not answered before the deadline ({answer.get('at', '?')}): counted as a rejection"
    by = answer.get("by") or "an unknown user"
    return f"{answer.get('answer', '?')} by {by} at {answer.get('at', '?')}"


def write_refused_report(
    artifacts: ArtifactDir, run_id: str, actor: str | None, why: str, states: dict[str, str]
) -> dict:
    """The summary of a run whose parameters were refused: it touched nothing; why, and each
    task's state (the report never crashes, whatever the run was given)."""
    outcome = "refused before any change: its parameters cannot be used"
    table = [f"- **Why**: {why}", "- **Targets**: untouched", "", "| task | state | notes |",
             "|---|---|---|"]  # fmt: skip
    table += [f"| {t} | {s} | {_note(task_note(artifacts, t))} |" for t, s in states.items()]
    files = write_summary(artifacts, run_id, actor, f"Rollout: {outcome}", outcome, table)
    return {"outcome": outcome, "artifacts": files, "targets": {}}


def write_summary(
    artifacts: ArtifactDir,
    run_id: str,
    actor: str | None,
    title: str,
    outcome: str,
    table: list[str],
) -> list[str]:
    """summary.md and summary.html of a run: the title, who ran it, a table, every artifact;
    returns the artifacts listed."""
    files = [f for f in list_tree(artifacts.root) if not f.startswith("summary.")]
    lines = [
        f"# {title}",
        "",
        f"Run `{run_id}`" + (f", triggered by {actor}" if actor else "") + ".",
        "",
        *table,
        "",
        "## Artifacts",
        "",
        *(f"- [{f}]({f})" for f in headline_artifacts(files)),
        "",
    ]
    markdown = "\n".join(lines)
    artifacts.write_text("summary.md", markdown)
    artifacts.write_text("summary.html", summary_html(markdown, files, outcome))
    return files


def target_states(run: Run) -> dict[str, str]:
    """Each target's state for this version, from its ledger, and whose work it is."""
    return {target: target_story(run, target) for target in TARGETS}


def ledger_state(run: Run, target: str) -> str:
    """applied, rolled back or not applied, as the target's ledger has this version (or why it
    could not be read)."""
    state = _read_state(run, target)
    if isinstance(state, str):
        return state
    if state.applied:
        return "applied"
    return "rolled back" if state.at is not None else "not applied"


def _read_state(run: Run, target: str) -> ledger.VersionState | str:
    try:
        with run.connect(target, "report") as conn:
            return ledger.version_state(conn, run.bundle.version)
    except RolloutError as exc:
        return f"unknown ({exc})"


def target_story(run: Run, target: str, apply_state: str | None = None) -> str:
    """Where a target stands and whose work that is: applied by this run, applied by an
    earlier run and left as is, rolled back by this run, not applied. `apply_state` is
    Airflow's state of this run's apply task there, to name an apply that committed after
    Airflow had given the task up (its worker was lost)."""
    state = _read_state(run, target)
    if isinstance(state, str):
        return state
    if state.at is None:
        return "not applied"
    mine = state.run_id == run.run_id
    if state.applied:
        if not mine:
            return f"applied by run {state.run_id}, left as is"
        if apply_state == "failed":
            return (
                "applied by this run, although Airflow marked its apply task failed (the task "
                "outlived its worker and committed)"
            )
        return "applied by this run"
    return "rolled back by this run" if mine else f"not applied (rolled back by run {state.run_id})"


def headline_artifacts(files: list[str]) -> list[str]:
    """The files a person opens: Data Docs as their index page, not their hundred assets."""
    return [f for f in files if "/data-docs/" not in f or f.endswith("data-docs/index.html")]


def run_outcome(states: dict[str, str]) -> str:
    """One phrase for how the run ended, from its tasks' states."""
    failed = [t for t, s in states.items() if s == "failed"]
    first = f" after {failed[0]} failed" if failed else ""
    if states.get("rollback_production") == "success":
        return f"rolled back in production{first}"
    if states.get("approve_production") == "failed":
        rolled = (
            "staging rolled back"
            if states.get("rollback_staging") == "success"
            else ("staging left as it was")
        )
        return f"not approved (rejected or timed out); production untouched, {rolled}"
    if states.get("rollback_staging") == "success":
        return f"failed on staging{first}; staging rolled back; production untouched"
    if failed:
        return f"failed{first}"
    if states.get("monitor_production_perf") == "success":
        return "succeeded"
    return "incomplete"


def _note(note: Any) -> str:
    if note is None:
        return ""
    if isinstance(note, dict):
        text = ", ".join(f"{k}: {v}" for k, v in note.items() if not isinstance(v, (dict, list)))
    else:
        text = str(note)
    return text.replace("|", "/").replace("\n", " ")[:300]


def summary_html(markdown: str, files: list[str], outcome: str) -> str:
    import html

    links = "\n".join(f'<li><a href="{html.escape(f)}">{html.escape(f)}</a></li>' for f in files)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Rollout: {html.escape(outcome)}"
        f"</title></head><body><h1>{html.escape(outcome)}</h1><pre>{html.escape(markdown)}</pre>"
        f"<h2>Artifacts</h2><ul>{links}</ul></body></html>\n"
    )

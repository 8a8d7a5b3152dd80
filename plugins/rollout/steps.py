"""The rollout's steps, one function per task of the DAG, callable without Airflow.

Each takes a `Run` (settings, targets, the run's artifact folder, who and which run) and
returns a small JSON-able dict: what the next steps and the report need. A step that cannot go
on raises a RolloutError whose message says what happened and what to do.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from rollout import bundle_snapshot, db, ledger, lint, probes, supabase
from rollout.artifacts import ArtifactDir, publish_tree
from rollout.assignment import run_assignment_suite
from rollout.catalog import CatalogCheck
from rollout.diff import capture_db_diff as write_db_diff
from rollout.diff import diff_snapshots, save_snapshot, write_diff
from rollout.errors import RollbackRefused, RolloutError
from rollout.lock_retries import LockNotGranted
from rollout.locktime import (
    STATEMENT_TIMEOUT_FACTOR,
    describe_tables,
    locked_rows,
    production_statement_timeout,
)
from rollout.locktrace import (
    TRACE_NAME,
    LockTrace,
    fully_predicted,
    longest_exclusive_hold,
    read_trace,
    unnamed_exclusive_locks,
)
from rollout.migrations import (
    MigrationBundle,
    RowRulesBroken,
    ScriptRun,
    list_down_conflicts,
    preflight_problems,
    run_check,
    run_script,
)
from rollout.online import OnlineRefused, apply_online
from rollout.pooler import TransactionPoolerRefused
from rollout.run import TARGETS, Run
from rollout.schema import snapshot_schema
from rollout.seed import table_row_counts
from rollout.timeouts import (
    IDLE_IN_TRANSACTION_S,
    ONLINE_BUILD_TIMEOUT_S,
    Bounds,
    RoleTimeouts,
)
from rollout.validation import validate_target
from rollout.worker_watch import WorkerLost, WorkerWatch

Progress = Callable[[str], None]
# How long a step waits for the database's rollout lock (another step of the same run, or a
# killed one's session not yet ended) before it gives up.
ROLLOUT_LOCK_WAIT_S = 5.0
# The online apply's swap holds the lock this long at most, for the window's arithmetic: it
# took 0.02-0.07 s at 1M and 3M allocations (benchmarks/README.md), whatever the table's size.
ONLINE_LOCK_S = 1.0
# Free disk the online apply wants beside the table's size (the copy, and its WAL on the way).
ONLINE_DISK_MARGIN = 1.2


class StepFailed(RolloutError):
    """A step ran and found something wrong (validation, tests, regression)."""


def _read_json(artifacts: ArtifactDir, name: str) -> Any:
    import json

    path = artifacts.path(name)
    if not path.exists():
        raise RolloutError(f"{name} is missing from the run's artifacts: was preflight run?")
    return json.loads(path.read_text())


# --- preflight -----------------------------------------------------------------------------


def preflight(run: Run) -> dict[str, Any]:
    """Both targets reachable, the bundle matching the ledger, no incompatible functions, nobody
    else rolling out; the "before" of each target kept for the diff and a rollback. A version
    applied on both already says so (`nothing_to_do`): the run has nothing to ask or change."""
    bundle = take_bundle(run)
    run.say(
        f"preflight: {bundle.path.name}, checksum {bundle.checksum[:12]}: the bytes this run "
        "applies, kept in its artifacts (bundle/)"
    )
    # Four eyes: someone other than the person who triggered the run must be able to approve.
    run.say(
        f"preflight: production may be approved by {run.settings.describe_approvers(run.actor)}"
    )
    result: dict[str, Any] = {"version": bundle.version, "checksum": bundle.checksum}
    result["lint"] = lint_bundle(run, bundle)
    s = run.settings
    run.artifacts.write_json(
        "run.json",
        {"run_id": run.run_id, "actor": run.actor, "version": bundle.version,
         "checksum": bundle.checksum, "window": s.window.describe(),
         "targets": {"staging": s.staging_conn_id, "production": s.production_conn_id}},
    )  # fmt: skip
    for target in TARGETS:
        result[target] = preflight_target(run, target)
    if all(result[target]["applied"] for target in TARGETS):
        # A second trigger of an applied version (queued behind max_active_runs, say): it
        # would re-run staging's checks and ask a person about a change already made.
        result["nothing_to_do"] = (
            f"{bundle.version} (checksum {bundle.checksum[:12]}) is applied on every target "
            "already: " + "; ".join(f"{t}: {result[t]['state']}" for t in TARGETS)
            + ". Nothing to do: no step runs and nobody is asked to approve"
        )  # fmt: skip
        run.say(f"preflight: {result['nothing_to_do']}")
    return result


def lint_bundle(run: Run, bundle: MigrationBundle) -> dict[str, int]:
    """Squawk on the bytes this run applies: lint.json (each finding with the rollout's answer,
    the author's accepted reason, or a warning) for the gate and the review page. Findings never
    refuse the run; a Squawk that cannot run does (the tool is part of the rollout)."""
    report = lint.lint_bundle(bundle)
    lint.write_report(report, run.artifacts)
    run.say(f"preflight: {report.summary()} (lint.json)")
    return {status: report.count(status) for status in (lint.ANSWERED, lint.ACCEPTED, lint.WARNING)}


def take_bundle(run: Run) -> MigrationBundle:
    """The bundle as this run reads it now, kept in its artifacts for every later step (a
    preflight run again keeps the first copy, refusing a folder edited since)."""
    if run.snapshot is None:
        return bundle_snapshot.take(run.settings.bundle, run.bundle_home)
    run.require_unchanged_bundle("preflight")
    return run.bundle


def preflight_target(run: Run, target: str) -> dict[str, Any]:
    """One target: reachable, its ledger matching the bundle, no function the migration would
    break, nobody else rolling out there; its row counts and (not yet applied) schema kept."""
    run.require_unchanged_bundle(f"preflight {target}")  # a fleet's target, waves later
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
        except TransactionPoolerRefused:
            continue  # refused the same way at every step: no lease was taken through it
        except RolloutError as exc:
            run.say(f"{target}: lease not released ({exc})")
    return released


# --- apply ---------------------------------------------------------------------------------


def apply_target(
    run: Run,
    target: str,
    *,
    statement_timeout_s: float | None = None,
    mode: str = "locking",
) -> dict:
    """The up under the lock-retry mechanism; the ledger row in its transaction.

    `mode` locking runs the script as written; online builds its lock phase's table beside the
    live one while the application writes and swaps it in under a short lock (rollout.online).
    A re-run after success is a no-op that says so. The up runs only as the bundle the ledger
    would record; what it does to existing rows is checked against its manifest before COMMIT.
    A failure leaves the target unchanged (the transaction rolled back) and is recorded. The
    bytes applied are the run's copy of the bundle; a folder edited since preflight refuses the
    apply before the target is touched."""
    run.require_unchanged_bundle(f"apply {target}")
    bundle, s = run.bundle, run.settings
    with run.connect(target, "apply") as conn, WorkerWatch(conn, enabled=run.watch_worker) as watch:
        ledger.take_rollout_lock(conn, target, ROLLOUT_LOCK_WAIT_S)
        hold_lease(run, conn, target)
        ledger.ensure_ledger(conn)
        state = ledger.version_state(conn, bundle.version)
        ledger.require_matching_checksum(state, bundle)
        if state.applied:
            run.say(f"apply {target}: nothing to do, {state.describe()}")
            if bundle.manifest.online is not None:  # an online apply killed after its swap
                _finish_online(run, conn, target)
            return {"noop": True, "state": state.describe(), "lock_seconds": state.lock_s,
                    "applied_by": state.run_id}  # fmt: skip
        rows = locked_rows(conn, bundle.manifest.lock_tables)
        retries = s.lock_retries_policy
        settings = _step_bounds(run, conn, target, "apply", statement_timeout_s)
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
                session={**run.session, "apply_mode": mode},
                detail=f"{mode}, attempt {done.attempt} of {retries.attempts}, {rows} rows "
                f"locked; rows: {done.effects.describe()}; {history}",
            )  # fmt: skip

        say = lambda message: run.say(f"apply {target}: {message}")  # noqa: E731
        trace = staging_trace(run) if target == "staging" else None
        try:
            if mode == "online":
                result = apply_online(
                    conn, bundle, "up", retries=retries, settings=settings, say=say,
                    before_commit=record, keep_going=watch.check, trace=trace,
                )  # fmt: skip
            else:
                result = run_script(
                    conn, bundle, "up", retries=retries, settings=settings, say=say,
                    before_commit=record, trace=trace,
                )  # fmt: skip
        except LockNotGranted as exc:
            why = f"lock not granted in {retries.attempts} attempts of {retries.lock_timeout_ms} ms"
            _record_outcome(run, conn, "up", "failed", why, started_at)
            raise StepFailed(f"apply {target}: {exc} {target} is unchanged.") from None
        except (RowRulesBroken, OnlineRefused) as exc:
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
    traced = {}
    if trace is not None:
        traced = keep_trace(run, target, trace, mode)
    run.say(
        f"apply {target}: applied {mode} in {result.seconds:.1f} s; "
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
        "apply_mode": mode,
        **({"online": result.online} if result.online else {}),
        **traced,
    }


def staging_trace(run: Run) -> LockTrace:
    """A lock trace for staging's apply, sized by the exact row counts preflight kept (staging's
    and production's; without them, staging's planner estimates and no prediction)."""
    counts = {}
    for target in TARGETS:
        before = run.folder(target, "before")
        found = before.path("row-counts.json").exists()
        counts[target] = _read_json(before, "row-counts.json") if found else {}
    return LockTrace(staging_rows=counts["staging"], production_rows=counts["production"])


def keep_trace(run: Run, target: str, trace: LockTrace, mode: str) -> dict:
    """The trace as <target>/lock-trace.json, told in a line; what the step returns of it."""
    kept = trace.to_json(target, mode)
    run.folder(target).write_json(TRACE_NAME, kept)
    longest = longest_exclusive_hold(kept)
    run.say(
        f"apply {target}: lock trace of {len(kept['statements'])} statements kept; "
        + (
            f"longest ACCESS EXCLUSIVE hold {longest['table']} from statement "
            f"{longest['from_statement']}, {longest['staging_s']:.2f} s here"
            if longest
            else "no ACCESS EXCLUSIVE on an existing table"
        )
    )
    return {"lock_trace": TRACE_NAME, "longest_exclusive_hold": longest}


def record_killed_apply(run: Run, target: str) -> str | None:
    """An apply whose task process died (it kept no reason): the attempt written to the ledger,
    which it could not do itself, and why there is nothing to roll back. None when the apply
    committed before its process died: that is this run's change, for the rollback to undo."""
    with run.connect(target, "rollback") as conn:
        ledger.take_rollout_lock(conn, target, ROLLOUT_LOCK_WAIT_S)  # the dead one's has gone
        ledger.ensure_ledger(conn)
        state = ledger.version_state(conn, run.bundle.version)
        if state.applied and state.run_id == run.run_id:
            return None
        closed = any(
            r["run_id"] == run.run_id and r["direction"] == "up" and r["version"] == state.version
            for r in ledger.history(conn)
        )
        if not closed:
            _record_outcome(
                run, conn, "up", "failed",
                "killed: the apply's task process died before it ended; its transaction rolled "
                "back with its session (written by the rollback, which found no outcome)",
            )  # fmt: skip
    why = (
        f"{target}: nothing to roll back: this run's apply was killed before it committed (its "
        f"task process died; the transaction rolled back with its session), so {target} is as "
        "it was before this run; the attempt is recorded in its ledger"
    )
    run.say(f"rollback {why}")
    return why


def _step_bounds(
    run: Run,
    conn: psycopg.Connection,
    target: str,
    step: str,
    statement_timeout_s: float | None,
) -> dict[str, str]:
    """The statement and idle bounds the step's transactions set for themselves (the role's
    defaults may be shorter than its lock phase: rollout.timeouts), said in its log.
    `statement_timeout_s` is the window's, sized from the predicted lock; without one, 3x the
    lock budget (no lock over the budget is ever applied to production)."""
    role = RoleTimeouts.read(conn)  # before anything is set: what the role's sessions get
    if statement_timeout_s:
        bounds, basis = Bounds(statement_timeout_s), "sized from the predicted lock"
    else:
        budget = run.settings.lock_budget_s
        bounds = Bounds(production_statement_timeout(budget))
        basis = f"{STATEMENT_TIMEOUT_FACTOR:g}x the lock budget {budget:g} s"
    run.say(f"{step} {target}: {bounds.describe(role, 'the lock phase', basis)}")
    return bounds.settings()


def applied_mode(conn: psycopg.Connection, version: str) -> str:
    """How the version's last committed apply went here: online or locking (the ledger row's
    session says; rows written before apply_mode existed were locking)."""
    applied = [
        r for r in ledger.history(conn) if r["version"] == version and r["outcome"] == "applied"
    ]
    session = (applied[-1]["session"] or {}) if applied else {}
    return session.get("apply_mode", "locking")


def _finish_online(run: Run, conn: psycopg.Connection, target: str) -> None:
    """Whatever an online apply killed after its swap left (its foreign keys' validation, the
    old table), finished: a re-run converges."""
    from rollout import online

    done = online.cleanup(conn, retries=run.settings.lock_retries_policy, say=run.say)
    if done:
        run.say(f"{target}: finished what an earlier online apply left: {'; '.join(done)}")


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


# --- validation, diff, tests --------------------------------------------------------------


def validate(run: Run, target: str, *, data_docs: bool = True) -> dict:
    """The bundle's suites and catalog checks on the target, and "nothing lost": what the
    apply did to existing rows (counted in its own transaction, kept in the ledger) against
    the manifest, everywhere; exact row counts too where nobody writes (staging, unless
    staging_has_writers). On a live production, counts taken before the apply prove nothing.
    Data Docs are rendered unless `data_docs` is False (a fleet's targets past its canary)."""
    run.require_unchanged_bundle(f"validate {target}")
    if target == "staging":
        require_named_locks(run)
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
    before_apply, at_gate = checks_before(run, target)
    if before_apply is not None:
        run.say(
            f"validate {target}: judged against {target} before the apply: only what is new or "
            "worse fails"
        )
    started = time.perf_counter()
    with run.connect(target, "validate") as conn:
        rows_check = row_effects_check(conn, run.bundle)
    report = validate_target(
        run.dsn(target), run.bundle.expectations_dir, "post_migration", folder, target=target,
        row_counts=counts, extra_checks=[rows_check], data_docs=data_docs,
        before=before_apply, at_gate=at_gate,
    )  # fmt: skip
    for line in report.preexisting:
        run.say(f"validate {target}: pre-existing, not the migration's: {line}")
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
        "preexisting": report.preexisting,
    }
    if not report.success:
        raise StepFailed(
            f"validate {target}: {len(report.failures)} check(s) failed: "
            + "; ".join(report.failures[:5])
            + f" (see {target}/validation/validation-report.md)"
        )
    return summary


def traced(run: Run) -> dict | None:
    """Staging's lock trace from this run's apply, or None (no apply traced in this run)."""
    return read_trace(run.folder("staging"))


def require_named_locks(run: Run) -> None:
    """The manifest's lock_tables against the locks staging's apply was measured taking: an
    ACCESS EXCLUSIVE on an existing table it does not name fails, saying the statement."""
    trace = traced(run)
    lock_tables = run.bundle.manifest.lock_tables
    problems = unnamed_exclusive_locks(trace, lock_tables) if trace else []
    if problems:
        raise StepFailed(
            f"validate staging: {'; '.join(problems)}, which the bundle's manifest.toml does "
            f"not name in lock_tables ({describe_tables(lock_tables)}): add the table there, so "
            "the runner takes it first under the lock retries and sizes the lock by its rows, "
            "or change the statement (staging/lock-trace.json has every statement's locks)"
        )


def check_production_data(run: Run, stage: str) -> dict:
    """Production's suite before the apply (rollout.preexisting): what production already
    violates, read-only and without Data Docs. `stage` "approval" for the gate to show it, or
    "apply": right before the apply, beside the performance baseline, the "before" the check
    after the apply is judged against. A violation is reported here, never raised."""
    from rollout import preexisting

    folder_name = {"approval": preexisting.BEFORE_APPROVAL, "apply": preexisting.BEFORE_APPLY}
    if stage not in folder_name:
        raise RolloutError(f"check_production_data: stage is 'approval' or 'apply', not {stage!r}")
    folder = run.folder("production", folder_name[stage])
    facts = preexisting.check_before(run.dsn("production"), run.bundle.expectations_dir, folder)
    found = [preexisting.violation_line(v) for v in facts["violations"]]
    run.say(
        f"production before the {stage}: {facts['expectations']} expectations met"
        + (f"; already violated: {'; '.join(found)}" if found else "")
        + (
            f"; not there yet: {', '.join(facts['absent_tables'])}"
            if facts["absent_tables"]
            else ""
        )
    )
    return {"expectations": facts["expectations"], "violations": found,
            "absent_tables": facts["absent_tables"], "taken_at": facts["taken_at"]}  # fmt: skip


def checks_before(run: Run, target: str) -> tuple[list[dict] | None, list[dict] | None]:
    """Production's expectations as they stood right before the apply and at the gate (each
    None when not taken): the check after the apply is judged against the first. Staging is
    judged as it is: nobody writes there, and its data failing stops the run before the gate."""
    from rollout import preexisting

    if target != "production":
        return None, None
    found = []
    for name in (preexisting.BEFORE_APPLY, preexisting.BEFORE_APPROVAL):
        folder = run.folder(target, name)
        taken = folder.path(preexisting.SUMMARY).exists()
        found.append(preexisting.read_details(folder) if taken else None)
    return found[0], found[1]


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
            run.artifacts.write_json("db-diff.json", {"summary": change, "none_in_this_run": True})
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

    run.require_unchanged_bundle("application tests")
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


# --- the window and the lock budget --------------------------------------------------------


def choose_apply_mode(run: Run, predicted_lock_s: float) -> dict:
    """How production takes the lock, and why: `apply_mode`, or with auto online where the
    bundle allows it (its manifest's [online]) and the predicted lock exceeds online_above_s.
    The lock the window must hold is the online swap's (ONLINE_LOCK_S) when online."""
    s, allowed = run.settings, run.bundle.manifest.online is not None
    if s.apply_mode == "online" and not allowed:
        raise StepFailed(
            "apply_mode online: the bundle does not allow it (its manifest.toml has no [online] "
            "section naming the table to rebuild); use locking or auto"
        )
    if s.apply_mode == "online":
        mode, why = "online", "apply_mode=online"
    elif s.apply_mode == "locking":
        mode, why = "locking", "apply_mode=locking"
    elif not allowed:
        mode, why = "locking", "the bundle allows no online apply"
    else:
        # Per statement when staging's apply was traced: the longest ACCESS EXCLUSIVE hold
        # predicted for production (readers and writers wait), not one figure for the phase.
        trace = traced(run)
        hold = longest_exclusive_hold(trace) if trace else None
        deciding, what = predicted_lock_s, f"predicted lock {predicted_lock_s:.1f} s"
        if trace is not None and fully_predicted(trace):
            deciding = hold["predicted_s"] if hold else 0.0
            what = (
                f"the longest predicted ACCESS EXCLUSIVE hold ({hold['table']} from "
                f"`{hold['label']}`) {deciding:.1f} s"
                if hold
                else "no ACCESS EXCLUSIVE hold measured on staging"
            )
        if deciding > s.online_above_s:
            mode = "online"
            why = (
                f"{what} exceeds online_above_s {s.online_above_s:g} s: the table is rebuilt "
                "beside the live one and swapped in under a short lock"
            )
        else:
            mode = "locking"
            why = f"{what} is within online_above_s {s.online_above_s:g} s"
    window_lock = min(predicted_lock_s, ONLINE_LOCK_S) if mode == "online" else predicted_lock_s
    return {"apply_mode": mode, "mode_reason": why, "window_lock_s": round(window_lock, 3)}


def check_before_approval(
    run: Run,
    predicted_lock_s: float,
    run_started: dt.datetime,
    now: dt.datetime | None = None,
    basis: dict | None = None,
) -> dict:
    """Ask the approver only about a rollout that can happen: a lock over the budget, a window
    that has passed or can never hold the lock refuse it before anyone is asked (the window
    is checked again after the approval, before the apply). Production's apply mode is chosen
    here, for the approver to read; online, its plan (the table's size, the free disk) too.
    The decision and its numbers (with `basis`, what the prediction scaled) are kept in
    lock-and-window.json."""
    run.require_unchanged_bundle("the check before the approval")
    s = run.settings
    facts: dict[str, Any] = {"predicted_lock_s": round(predicted_lock_s, 3),
                             "lock_budget_s": s.lock_budget_s, "window": s.window.describe(),
                             **(basis or {})}  # fmt: skip
    try:
        mode = choose_apply_mode(run, predicted_lock_s)
        facts.update(mode)
        plan = None
        if mode["apply_mode"] == "online":
            plan = online_plan(run, "production")
        decision = check_window(run, mode["window_lock_s"], run_started, now)
        facts.update(online_plan=plan, action=decision.action, reason=decision.reason)
        role, timeouts = role_timeouts_at_gate(run, predicted_lock_s, mode)
        facts.update(role_timeouts=role, timeouts=timeouts)
        if decision.action == "refuse":
            raise StepFailed(
                f"{decision.reason}: nobody is asked to approve a rollout that cannot happen. "
                "Production untouched, staging kept; trigger again with a window that fits"
            )
    except StepFailed as exc:
        facts.update(action="refuse", reason=facts.get("reason") or str(exc))
        raise
    finally:  # the numbers behind the decision, whichever it was, for the review page
        run.artifacts.write_json("lock-and-window.json", facts)
    run.say(
        f"before the approval: predicted lock {predicted_lock_s:.1f} s; apply mode "
        f"{mode['apply_mode']} ({mode['mode_reason']}); {decision.reason}; {timeouts}"
    )
    return {"predicted_lock_s": round(predicted_lock_s, 3), "window": decision.reason, **mode,
            "online_plan": plan, "timeouts": timeouts}  # fmt: skip


def role_timeouts_at_gate(
    run: Run, predicted_lock_s: float, mode: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """(the production role's timeouts, a sentence for the approver): whether the predicted
    lock phase (or, online, the build on the copy, the same work) fits under the defaults a
    fresh session of the migration role gets, and what the apply sets instead."""
    try:
        with run.connect("production", "plan") as conn:
            role = RoleTimeouts.read(conn)
    except RolloutError as exc:
        return {}, f"the migration role's timeouts could not be read ({exc})"
    bound = production_statement_timeout(mode["window_lock_s"])
    if mode["apply_mode"] == "online":
        phase = "the online build"
        sets = (
            f"each build sets statement_timeout {ONLINE_BUILD_TIMEOUT_S:g} s, the swap {bound:g} s"
        )
    else:
        phase, sets = "the lock phase", f"the apply sets statement_timeout {bound:g} s"
    verdict = "would be cut by it" if role.cuts(predicted_lock_s) else "fits under it"
    role_statement = role.statement_timeout_s
    line = (
        f"the migration role's statement_timeout is "
        f"{f'{role_statement:g} s' if role_statement else 'unset'}, its "
        f"idle_in_transaction_session_timeout "
        f"{f'{role.idle_in_transaction_s:g} s' if role.idle_in_transaction_s else 'unset'}: "
        f"{phase} (predicted {predicted_lock_s:.1f} s) {verdict}; {sets} and "
        f"idle_in_transaction_session_timeout {IDLE_IN_TRANSACTION_S:g} s in its own "
        "transaction, so the role's defaults never cut it half-way"
    )
    return {**role.to_json(), "predicted_phase_cut": role.cuts(predicted_lock_s)}, line


def online_plan(run: Run, target: str) -> str:
    """What the online apply would need on the target (its table's size, the free disk), or a
    refusal that says why it cannot run there."""
    from rollout import online

    with run.connect(target, "plan") as conn:
        plan = online.plan_online(conn, run.bundle)
    if plan.problems:
        raise StepFailed(f"{target}: the online apply cannot run: {'; '.join(plan.problems)}")
    if plan.free_bytes is not None and plan.free_bytes < plan.total_bytes * ONLINE_DISK_MARGIN:
        raise StepFailed(
            f"{target}: the online apply needs room for a copy of {plan.describe()}; free space "
            f"on the server's disk first, or apply_mode=locking"
        )
    return plan.describe()


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
        settings = _step_bounds(run, conn, target, "rollback", None)
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

        # The down the way the up went: an online up is undone online the other way.
        mode = applied_mode(conn, bundle.version)
        say = lambda message: run.say(f"rollback {target}: {message}")  # noqa: E731
        try:
            if mode == "online":
                result = apply_online(
                    conn, bundle, "down", retries=retries, settings=settings,
                    before_commit=record, keep_export=keep_export, say=say,
                )  # fmt: skip
            else:
                result = run_script(
                    conn, bundle, "down", retries=retries, settings=settings,
                    before_commit=record, keep_export=keep_export, say=say,
                )  # fmt: skip
        except RollbackRefused as exc:
            _record_outcome(run, conn, "down", "refused", str(exc), started_at)
            raise
        except (LockNotGranted, RowRulesBroken, OnlineRefused) as exc:
            _record_outcome(run, conn, "down", "failed", str(exc).splitlines()[0], started_at)
            raise StepFailed(f"rollback {target}: {exc}") from None
        run_check(conn, bundle, "verify_down")
        after = snapshot_schema(conn)
    before_path = run.folder(target, "before").path("schema.json")
    if before_path.exists():
        from rollout.diff import load_snapshot_text

        before = load_snapshot_text(before_path.read_text())
        diff = diff_snapshots(before, after)
        write_diff(diff, folder, "db-diff-after-rollback.txt", "before", "after rollback")
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
        "apply_mode": mode,
        "seconds": round(result.seconds, 3),
        "lock_seconds": round(result.lock_seconds, 3),
        "attempts": result.attempts,
        "exported": result.exported,
    }


# --- report ----------------------------------------------------------------------------------

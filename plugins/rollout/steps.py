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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from rollout import db, ledger, probes
from rollout.artifacts import ArtifactDir, list_tree, publish_tree
from rollout.assignment import run_assignment_suite
from rollout.diff import capture_db_diff as write_db_diff
from rollout.diff import diff_snapshots, save_snapshot
from rollout.errors import RollbackRefused, RolloutError
from rollout.locktime import allocation_rows, predict_lock_seconds
from rollout.migrations import apply_down, apply_up, list_down_conflicts, run_check
from rollout.schema import snapshot_schema
from rollout.seed import table_row_counts
from rollout.settings import RolloutSettings
from rollout.validation import row_count_parameters, validate_target

Progress = Callable[[str], None]
TARGETS = ("staging", "production")
# statement_timeout of a production apply: this many times the predicted lock, and at least
# STATEMENT_TIMEOUT_FLOOR_S, so a prediction a little low does not abort a healthy apply.
STATEMENT_TIMEOUT_FACTOR = 3.0
STATEMENT_TIMEOUT_FLOOR_S = 60.0


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

    @property
    def bundle(self):
        return self.settings.bundle

    def say(self, message: str) -> None:
        self.progress(message)

    def folder(self, target: str, *parts: str) -> ArtifactDir:
        return self.artifacts.subdir("/".join((target, *parts)))

    def connect(self, target: str, purpose: str) -> psycopg.Connection:
        return db.connect(self.dsns[target], application_name=f"rollout-{purpose}")


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
        ledger.take_rollout_lock(conn, target)  # released when this session ends
        state = ledger.version_state(conn, bundle.version)
        ledger.require_matching_checksum(state, bundle)
        problems = ledger.compatibility_problems(conn)
        if problems:
            raise StepFailed(
                f"{target}: {', '.join(problems)} use allocations_no_overlap as an ON CONFLICT "
                "arbiter; a deferrable constraint cannot be one, so they would fail after the "
                "migration. Change them first"
            )
        rows = allocation_rows(conn)
        folder = run.folder(target, "before")
        # Row counts always (validation compares with them); the schema only while it is
        # the pre-migration one a rollback must return to.
        folder.write_json("row-counts.json", table_row_counts(conn))
        if not state.applied:
            save_snapshot(snapshot_schema(conn), folder, "schema.json")
        run.say(f"preflight: {target}: {state.describe()}; {rows:,} allocations")
        return {
            "applied": state.applied,
            "state": state.describe(),
            "allocation_rows": rows,
            "server_version": db.server_version(conn),
        }


# --- apply ---------------------------------------------------------------------------------


def apply_target(run: Run, target: str, *, statement_timeout_s: float | None = None) -> dict:
    """The up under lock_timeout with bounded retries; the ledger row in its transaction.

    A re-run after success is a no-op that says so. A failure leaves the target unchanged (the
    transaction rolled back) and is recorded in the ledger."""
    bundle, s = run.bundle, run.settings
    with run.connect(target, "apply") as conn:
        ledger.take_rollout_lock(conn, target)
        ledger.ensure_ledger(conn)
        state = ledger.version_state(conn, bundle.version)
        ledger.require_matching_checksum(state, bundle)
        if state.applied:
            run.say(f"apply {target}: nothing to do, {state.describe()}")
            return {"noop": True, "state": state.describe(), "lock_seconds": state.lock_s}
        rows = allocation_rows(conn)
        settings = {"lock_timeout": f"{s.lock_timeout_ms}ms"}
        if statement_timeout_s:
            settings["statement_timeout"] = f"{int(statement_timeout_s * 1000)}ms"
        started_at = dt.datetime.now(dt.UTC)
        attempts = s.lock_retries + 1
        for attempt in range(1, attempts + 1):
            run.say(
                f"apply {target}: attempt {attempt}/{attempts}, lock_timeout {s.lock_timeout_ms} ms"
                + (
                    f", statement_timeout {statement_timeout_s:.0f} s"
                    if statement_timeout_s
                    else ""
                )
                + f", {rows:,} allocations"
            )
            try:
                result = apply_up(
                    conn,
                    bundle,
                    settings=settings,
                    before_commit=lambda c, secs, lock_s, attempt=attempt: ledger.record(
                        c, bundle, direction="up", outcome="applied", run_id=run.run_id,
                        actor=run.actor, started_at=started_at, duration_s=secs, lock_s=lock_s,
                        detail=f"attempt {attempt} of {attempts}, {rows} allocations",
                    ),
                )  # fmt: skip
                break
            except psycopg.errors.LockNotAvailable:
                if attempt == attempts:
                    _record_outcome(
                        run, conn, "up", "failed", f"lock not granted in {attempts} attempts",
                        started_at,
                    )  # fmt: skip
                    raise StepFailed(
                        f"apply {target}: the lock on allocations was not granted within "
                        f"{s.lock_timeout_ms} ms in {attempts} attempts (the application holds it); "
                        f"{target} is unchanged. Retry in a quieter moment or raise lock_retries"
                    ) from None
                wait = s.retry_backoff_s * 2 ** (attempt - 1)
                run.say(
                    f"apply {target}: lock not granted; the transaction rolled back; retry in {wait:g} s"
                )
                time.sleep(wait)
            except psycopg.Error as exc:
                reason = str(exc).strip().splitlines()[0]
                _record_outcome(run, conn, "up", "failed", reason, started_at)
                raise StepFailed(
                    f"apply {target}: {reason}. The transaction rolled back: {target} is unchanged"
                ) from exc
        run_check(conn, bundle, "verify_up")
    run.say(
        f"apply {target}: applied in {result.seconds:.1f} s; allocations locked {result.lock_seconds:.2f} s"
    )
    return {
        "noop": False,
        "seconds": round(result.seconds, 3),
        "lock_seconds": round(result.lock_seconds, 3),
        "allocation_rows": rows,
        "attempts": attempt,
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
        )  # fmt: skip


def production_statement_timeout(predicted_lock_s: float) -> float:
    return max(STATEMENT_TIMEOUT_FLOOR_S, predicted_lock_s * STATEMENT_TIMEOUT_FACTOR)


def predict_production_lock(staging_apply: dict, preflight_result: dict) -> float:
    """Staging's measured lock time scaled to production's row count."""
    return predict_target_lock(
        staging_apply,
        preflight_result["staging"]["allocation_rows"],
        preflight_result["production"]["allocation_rows"],
    )


def predict_target_lock(staging_apply: dict, staging_rows: int, target_rows: int) -> float:
    """Staging's measured lock time scaled to a target's row count (staging's rows as its apply
    counted them, else as preflight did)."""
    measured = staging_apply.get("lock_seconds")
    if measured is None:
        raise RolloutError("staging has no measured lock time (applied outside this tool?)")
    rows = staging_apply.get("allocation_rows") or staging_rows
    return predict_lock_seconds(measured, max(rows, 1), target_rows)


# --- validation, diff, tests --------------------------------------------------------------


def validate(run: Run, target: str) -> dict:
    folder = run.folder(target, "validation")
    before = run.folder(target, "before")
    counts = (
        _read_json(before, "row-counts.json") if before.path("row-counts.json").exists() else {}
    )
    run.say(f"validate {target}: Great Expectations suite and catalog checks")
    started = time.perf_counter()
    report = validate_target(
        run.dsns[target], run.bundle.version, "post_migration", folder,
        row_count_parameters(counts) if counts else None, target=target,
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
        "failures": report.failures,
    }
    if not report.success:
        raise StepFailed(
            f"validate {target}: {len(report.failures)} check(s) failed: "
            + "; ".join(report.failures[:5])
            + f" (see {target}/validation/validation-report.md)"
        )
    return summary


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
    run.say("assignment tests against staging (a synthetic tenant, removed after)")
    with tempfile.TemporaryDirectory(prefix="rollout-assignment-") as local:
        result = run_assignment_suite(run.dsns["staging"], Path(local))
        publish_tree(Path(local), run.folder("staging", "assignment"))
    run.say(f"assignment tests: {result.line()} in {result.seconds:.1f} s")
    summary = {
        "line": result.line(),
        "passed": result.passed,
        "failed": result.failed + result.errors,
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
    return "\n".join(
        [
            f"**{run.bundle.path.name}** is on staging and passed its checks.",
            "",
            f"- Validation on staging: {validation['expectations']} expectations, "
            f"{validation['catalog']} catalog checks passed",
            f"- Assignment tests on staging: {tests['line']}",
            f"- Schema change (db-diff): {diff['change']}; staging/production drift: {drift}",
            *_fleet_lines(pre),
            f"- Production: {pre['production']['allocation_rows']:,} allocations; predicted lock "
            f"on allocations **{predicted:.1f} s** (budget {s.lock_budget_s:g} s; staging held "
            f"it {facts['apply_staging'].get('lock_seconds') or 0:.2f} s)",
            f"- Maintenance window: {s.window.describe()}",
            f"- After the apply: queries watched for {s.monitor_period_s} s; a median over "
            f"{s.regression_threshold:g}x the baseline → {s.on_regression.replace('_', ' ')}",
            f"- Reject (or no answer in {s.approval_timeout_h:g} h) → production untouched, "
            f"staging: {s.on_reject.replace('_', ' ')}",
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
        run.dsns["production"], run.folder("production", "perf"), progress=run.say
    )
    return {name: round(s.p50_ms, 3) for name, s in snapshot.stats.items()}


def monitor_production_perf(run: Run) -> dict:
    folder = run.folder("production", "perf")
    before = probes.PerfSnapshot.from_json(_read_json(folder, "perf-baseline.json"))
    s = run.settings
    run.say(f"monitoring production for {s.monitor_period_s} s against the baseline")
    comparison = probes.monitor(
        run.dsns["production"], before, s.monitor_period_s, s.regression_threshold, folder,
        progress=run.say,
    )  # fmt: skip
    run.say(f"monitoring: {comparison.line()}")
    if not comparison.ok:
        raise StepFailed(
            f"performance regression in production: {comparison.line()} (production/perf/perf-monitor.md)"
        )
    return {"line": comparison.line()}


# --- rollback --------------------------------------------------------------------------------


def rollback_target(run: Run, target: str) -> dict:
    """down.sql, after its own refusal check, verified against the "before" snapshot.

    Nothing applied by this tool (the apply's transaction rolled back) → nothing to undo. Rows
    that would break the restored constraint → refused, with the conflict report; nothing is
    deleted or edited to make a rollback pass."""
    from rollout.diff import load_snapshot_text

    bundle = run.bundle
    folder = run.folder(target, "rollback")
    with run.connect(target, "rollback") as conn:
        ledger.take_rollout_lock(conn, target)
        ledger.ensure_ledger(conn)
        state = ledger.version_state(conn, bundle.version)
        if not state.applied:
            run_check(conn, bundle, "verify_down")
            run.say(
                f"rollback {target}: not needed, {state.describe()} (its transaction rolled back)"
            )
            return {"action": "not_needed"}
        conflicts = list_down_conflicts(conn, bundle)
        if conflicts:
            folder.write_json("down-conflicts.json", conflicts)
            _record_outcome(
                run, conn, "down", "refused", f"{len(conflicts)} conflicting allocation pairs"
            )
            raise RollbackRefused(
                f"rollback {target} refused: {len(conflicts)} pairs of allocations would violate "
                f"the restored constraint (listed in {target}/rollback/down-conflicts.json); "
                "nothing was deleted. Resolve them with the application's owners, then roll back"
            )
        _export_confirmation_cache(conn, folder)
        started_at = dt.datetime.now(dt.UTC)
        try:
            result = apply_down(
                conn, bundle,
                before_commit=lambda c, secs, lock_s: ledger.record(
                    c, bundle, direction="down", outcome="rolled_back", run_id=run.run_id,
                    actor=run.actor, started_at=started_at, duration_s=secs, lock_s=lock_s,
                ),
            )  # fmt: skip
        except RollbackRefused as exc:
            _record_outcome(run, conn, "down", "refused", str(exc), started_at)
            raise
        run_check(conn, bundle, "verify_down")
        after = snapshot_schema(conn)
    before_path = run.folder(target, "before").path("schema.json")
    if before_path.exists():
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
    return {"action": "rolled_back", "seconds": round(result.seconds, 3)}


def _export_confirmation_cache(conn: psycopg.Connection, folder: ArtifactDir) -> None:
    """down.sql drops booking_confirmation_results: keep its rows as an artifact first."""
    copy_sql = "COPY public.booking_confirmation_results TO STDOUT WITH (FORMAT csv, HEADER)"
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        data = b"".join(bytes(chunk) for chunk in copy)
    folder.write_bytes("booking_confirmation_results.csv", data)


# --- report ----------------------------------------------------------------------------------


def write_report(run: Run, states: dict[str, str], facts: dict[str, Any]) -> dict:
    """summary.md and summary.html: the outcome, each task's state, every artifact."""
    outcome = run_outcome(states)
    table = ["| task | state | notes |", "|---|---|---|"]
    for task, state in states.items():
        failure = run.artifacts.path(f"failures/{task}.txt")
        note = failure.read_text().strip() if failure.exists() else facts.get(task)
        table.append(f"| {task} | {state} | {_note(note)} |")
    files = write_summary(run, f"Rollout {run.bundle.version}: {outcome}", outcome, table)
    run.say(f"report: {outcome}; {len(files)} artifacts")
    return {"outcome": outcome, "artifacts": files}


def write_summary(run: Run, title: str, outcome: str, table: list[str]) -> list[str]:
    """summary.md and summary.html of a run: the title, who ran it, a table, every artifact;
    returns the artifacts listed."""
    files = [f for f in list_tree(run.artifacts.root) if not f.startswith("summary.")]
    lines = [
        f"# {title}",
        "",
        f"Run `{run.run_id}`" + (f", triggered by {run.actor}" if run.actor else "") + ".",
        "",
        *table,
        "",
        "## Artifacts",
        "",
        *(f"- [{f}]({f})" for f in headline_artifacts(files)),
        "",
    ]
    markdown = "\n".join(lines)
    run.artifacts.write_text("summary.md", markdown)
    run.artifacts.write_text("summary.html", summary_html(markdown, files, outcome))
    return files


def target_states(run: Run) -> dict[str, str]:
    """Each target's state for this version, from its ledger: applied, rolled back, not
    applied (or why it could not be read)."""
    return {target: ledger_state(run, target) for target in TARGETS}


def ledger_state(run: Run, target: str) -> str:
    """applied, rolled back or not applied, as the target's ledger has this version (or why it
    could not be read)."""
    try:
        with run.connect(target, "report") as conn:
            state = ledger.version_state(conn, run.bundle.version)
    except RolloutError as exc:
        return f"unknown ({exc})"
    if state.applied:
        return "applied"
    return "rolled back" if state.at is not None else "not applied"


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
            else ("staging left applied")
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

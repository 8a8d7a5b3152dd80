"""The fleet rollout's own steps, callable without Airflow: the fleet's preflight, one target's
`Run` and its whole story (`roll_out_target`), the rollback decisions and the fleet report.
Every per-target step is the single-target rollout's own (`rollout.steps`), run against that
target's `Run`."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

from rollout import fleet
from rollout.artifacts import list_tree
from rollout.errors import RolloutError, TargetUnavailable
from rollout.locktime import locked_rows
from rollout.report import keep_ledger, ledger_state, target_story, write_summary
from rollout.run import Run
from rollout.settings import check_conn_id
from rollout.steps import (
    apply_target,
    baseline_production_perf,
    check_production_data,
    hold_lease,
    lint_bundle,
    monitor_production_perf,
    preflight_target,
    release_leases,
    rollback_target,
    take_bundle,
    validate,
)

log = logging.getLogger("rollout")
STEPS_FILE = "steps.json"  # how each step of a target ended, written as each one ends

# The tasks before the first production target: one failing means production was not reached.
BEFORE_PRODUCTION = (
    "preflight", "apply_staging", "validate_staging", "capture_db_diff", "run_assignment_tests",
    "approve_production",
)  # fmt: skip


def preflight_fleet(run: Run, settings: fleet.FleetSettings, dsns: Mapping[str, str]) -> dict:
    """Before anything runs: staging's preflight, and every production target answering (its
    connection was resolved by the caller: a missing one has failed already). The largest
    target's row count sizes the approval's predicted lock. The bundle is kept in the run's
    artifacts here: every target of every wave applies that copy."""
    bundle = take_bundle(run)
    lint_bundle(run, bundle)
    run.say(
        f"fleet preflight: {bundle.path.name}, {len(settings.targets)} production targets in "
        f"{len(settings.waves)} waves; approved by {run.settings.describe_approvers(run.actor)}"
    )
    run.artifacts.write_json(
        "run.json",
        {"run_id": run.run_id, "actor": run.actor, "version": bundle.version,
         "checksum": bundle.checksum, "window": run.settings.window.describe(),
         "targets": {"staging": run.settings.staging_conn_id, "production": settings.targets},
         "waves": settings.waves, "on_target_failure": settings.on_target_failure},
    )  # fmt: skip
    staging = preflight_target(run, "staging")
    rows: dict[str, int] = {}
    for conn_id in settings.targets:
        target = target_run(run, conn_id, dsns[conn_id])
        try:
            with target.connect("production", "preflight") as conn:
                hold_lease(target, conn, "production")  # every target, until the report
                rows[conn_id] = locked_rows(conn, bundle.manifest.lock_tables)
        except TargetUnavailable as exc:
            raise TargetUnavailable(f"production target {conn_id}: {exc}") from None
    largest = max(rows, key=rows.__getitem__)
    run.say(
        f"fleet preflight: all {len(rows)} targets answer; largest {largest}, {rows[largest]:,}"
    )
    return {
        "version": bundle.version,
        "checksum": bundle.checksum,
        "staging": staging,
        "production": {"conn_id": largest, "locked_rows": rows[largest]},
        "targets": rows,
        "plan": settings.plan(),
        "waves": len(settings.waves),
        "on_target_failure": settings.on_target_failure,
    }


def target_run(run: Run, conn_id: str, dsn: str) -> Run:
    """The single-target `Run` of one production target: its own artifact folder
    (targets/<conn_id>/), staging shared."""
    # Checked at settings time already; checked again where the id becomes a folder name, so
    # no caller can hand this a '../..' and write outside the run's folder.
    check_conn_id(conn_id, "production target")
    return dataclasses.replace(
        run,
        settings=dataclasses.replace(run.settings, production_conn_id=conn_id),
        dsns={"staging": run.dsns["staging"], "production": dsn},
        artifacts=run.artifacts.subdir(f"targets/{conn_id}"),
    )


def stop_reason(plan: list[dict], states: Mapping[str, str]) -> str | None:
    """Why no further target may start (a target failed), or None."""
    failed = fleet.failed_targets(plan, states)
    return f"not started: the fleet stopped after {', '.join(failed)} failed" if failed else None


def read_steps(run: Run) -> dict[str, str]:
    """How each step of a target ended (steps.json): {step: success | failed}, rollback too."""
    path = run.artifacts.path(STEPS_FILE)
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        return {}


def _record_step(run: Run, steps: dict[str, str], step: str, state: str) -> None:
    steps[step] = state
    run.artifacts.write_json(STEPS_FILE, steps)


def roll_out_target(
    run: Run,
    *,
    statement_timeout_s: float | None = None,
    mode: str = "locking",
    data_docs: bool = True,
) -> dict[str, Any]:
    """One production target from start to end: its preflight and performance baseline, the
    apply, the validation and the monitoring, each the single-target rollout's own step. A
    target whose validation fails, or whose performance regresses (unless on_regression=keep),
    is rolled back here, before the failure is raised. Each step's end goes to steps.json as
    it happens, so the report and `rollback_targets` know where a target stopped, even when
    its process was killed."""
    steps: dict[str, str] = {}
    results: dict[str, Any] = {}

    def step(name: str, call: Any) -> Any:
        try:
            result = call()
        except Exception as exc:
            _record_step(run, steps, name, "failed")
            # The reason, for the report and the person reading it (failures/<step>.txt).
            run.artifacts.write_text(f"failures/{name}.txt", f"{exc}\n")
            raise
        _record_step(run, steps, name, "success")
        results[name] = result
        return result

    def checked() -> dict:
        found = preflight_target(run, "production")
        found["perf_baseline"] = baseline_production_perf(run)
        # The "before" its validation is judged against: only what is new or worse fails.
        found["data_before"] = check_production_data(run, "apply")
        return found

    step("preflight", checked)
    step("apply", lambda: apply_target(
        run, "production", statement_timeout_s=statement_timeout_s, mode=mode))  # fmt: skip
    try:
        step("validate", lambda: validate(run, "production", data_docs=data_docs))
        step("monitor", lambda: monitor_production_perf(run))
    except RolloutError:
        why = rollback_reason_of(run.settings.on_regression, steps)
        if why is not None:
            roll_back(run, why, steps)
        raise
    return results


def roll_back(run: Run, why: str, steps: dict[str, str] | None = None) -> dict | None:
    """Roll this run's apply back on a target, keeping the result in steps.json; a refused or
    failed rollback is recorded and raised."""
    steps = read_steps(run) if steps is None else steps
    run.say(f"rollback {run.settings.production_conn_id}: {why}")
    try:
        result = rollback_target(run, "production")
    except RolloutError as exc:
        _record_step(run, steps, "rollback", "failed")
        run.artifacts.write_text("failures/rollback.txt", f"{exc}\n")
        raise
    done = "success" if result["action"] == "rolled_back" else "skipped"
    _record_step(run, steps, "rollback", done)
    if done == "skipped":
        run.artifacts.write_text("notes/rollback.txt", f"{result['why']}\n")
    return result


def rollback_reason_of(on_regression: str, steps: Mapping[str, str]) -> str | None:
    """Why a target this run applied is rolled back for its own sake, or None: its
    validation failed, it regressed, or its task ended before both were done."""
    if (
        steps.get("apply") != "success"
        or steps.get("rollback")
        or steps.get("monitor") == ("success")
    ):
        return None
    if steps.get("monitor") == "failed":
        if on_regression == "keep":
            return None
        return "its performance regressed (on_regression=rollback_production)"
    if steps.get("validate") == "failed":
        return "its validation failed"
    return "its task ended after the apply, before its validation and monitoring did"


def rollback_reason(
    settings: fleet.FleetSettings,
    plan: list[dict],
    index: int,
    states: Mapping[str, str],
    steps: Mapping[str, str],
) -> str | None:
    """Why target `index` of the plan is to be rolled back after the waves, or None to leave
    it as it is (never applied by this run, rolled back already, or healthy and kept)."""
    if steps.get("apply") != "success" or steps.get("rollback"):
        return None
    own = rollback_reason_of(settings.rollout.on_regression, steps)
    if own is not None or steps.get("monitor") != "success":
        return own
    failed = fleet.failed_targets(plan, states)
    rejected = any(
        s in fleet.FAILED
        for k, s in states.items()
        if k.startswith("wave_") and k.endswith(".approve")
    )
    if (failed or rejected) and settings.on_target_failure == "rollback_all":
        why = f"{', '.join(failed)} failed" if failed else "a wave was not approved"
        return f"{why}; on_target_failure=rollback_all"
    return None


def rollback_targets(
    settings: fleet.FleetSettings, plan: list[dict], target_runs: list[Run],
    states: Mapping[str, str],
) -> dict[str, str]:  # fmt: skip
    """After the waves: each target the policy says to roll back, one after the other (a
    target rolled back already in its own task is left alone). {conn_id: why or error}."""
    done: dict[str, str] = {}
    for index, (entry, trun) in enumerate(zip(plan, target_runs, strict=True)):
        why = rollback_reason(settings, plan, index, states, read_steps(trun))
        if why is None:
            continue
        try:
            roll_back(trun, why)
            done[entry["conn_id"]] = why
        except RolloutError as exc:
            done[entry["conn_id"]] = f"rollback refused: {exc}"
    return done


def target_reason(run: Run) -> str | None:
    """What a target's tasks left to say: the reasons its failed tasks gave."""
    notes = []
    for name in list_tree(run.artifacts.root):
        if name.startswith("failures/"):
            notes.append(run.artifacts.path(name).read_text().strip())
    return "; ".join(notes) or None


def write_fleet_report(
    run: Run,
    plan: list[dict],
    target_runs: list[Run],
    states: Mapping[str, str],
) -> dict:
    """fleet-report.json and summary.{md,html}: the outcome and each target's final state
    (applied / not applied / rolled back / refused) and why."""
    rows = []
    staging_failed = [t for t in BEFORE_PRODUCTION if states.get(t) == "failed"]
    stopped = stop_reason(plan, states) or (
        f"not started: {staging_failed[0]} failed" if staging_failed else None
    )
    for entry, trun in zip(plan, target_runs, strict=True):
        task_state = fleet.target_task_state(states, entry)
        steps = read_steps(trun)
        reason = target_reason(trun) or (stopped if "apply" not in steps else None)
        state, why = fleet.final_state(ledger_state(trun, "production"), task_state, steps, reason)
        story = target_story(trun, "production")
        if state == "applied" and story.startswith("applied by run"):
            why = story  # an earlier run's work, left as is
        rows.append({"conn_id": entry["conn_id"], "wave": entry["wave"], "slot": entry["slot"],
                     "state": state, "why": why})  # fmt: skip
    counts = {s: sum(r["state"] == s for r in rows) for s in fleet.FINAL_STATES}
    all_applied = counts["applied"] == len(rows) and not any(
        s in fleet.FAILED for s in states.values()
    )
    if all_applied:
        outcome = "succeeded"
    elif staging_failed:
        outcome = f"stopped before production: {staging_failed[0]} failed"
    else:
        outcome = "failed: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    table = [
        "| target | wave | state | why |",
        "|---|---:|---|---|",
        *(f"| {r['conn_id']} | {r['wave']} | {r['state']} | {r['why'].replace('|', '/')} |"
          for r in rows),
    ]  # fmt: skip
    run.artifacts.write_json("fleet-report.json", {"outcome": outcome, "targets": rows})
    keep_ledger(run, "staging")
    for trun in target_runs:
        keep_ledger(trun, "production")
    release_leases(run, ["staging"])
    for trun in target_runs:
        release_leases(trun, ["production"])
    write_summary(
        run.artifacts, run.run_id, run.actor, f"Fleet rollout {run.bundle.version}: {outcome}",
        outcome, table,
    )  # fmt: skip
    run.say(f"fleet report: {outcome}")
    return {"outcome": outcome, "targets": rows, "counts": counts}

"""The fleet rollout's own steps, callable without Airflow: the fleet's preflight, one target's
`Run`, the rollback decision and the fleet report. Every per-target step is the single-target
rollout's own (`rollout.steps`), run against that target's `Run`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from rollout import fleet
from rollout.artifacts import list_tree
from rollout.errors import TargetUnavailable
from rollout.locktime import locked_rows
from rollout.report import keep_ledger, ledger_state, target_story, write_summary
from rollout.run import Run
from rollout.settings import check_conn_id
from rollout.steps import hold_lease, preflight_target, release_leases

# The tasks before the first production target: one failing means production was not reached.
BEFORE_PRODUCTION = (
    "preflight", "apply_staging", "validate_staging", "capture_db_diff", "run_assignment_tests",
    "approve_production",
)  # fmt: skip


def preflight_fleet(run: Run, settings: fleet.FleetSettings, dsns: Mapping[str, str]) -> dict:
    """Before anything runs: staging's preflight, and every production target answering (its
    connection was resolved by the caller: a missing one has failed already). The largest
    target's row count sizes the approval's predicted lock."""
    bundle = run.bundle
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


def rollback_reason(
    settings: fleet.FleetSettings, plan: list[dict], index: int, states: Mapping[str, str]
) -> str | None:
    """Why target `index` of the plan is to be rolled back, or None to leave it as it is."""
    own = fleet.target_task_states(states, plan[index])
    if own["apply"] == "success" and any(own[t] in fleet.FAILED for t in ("validate", "monitor")):
        if own["monitor"] == "failed" and own["validate"] == "success":
            if settings.rollout.on_regression == "keep":
                return None
            return "its performance regressed (on_regression=rollback_production)"
        return "its validation failed"
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
    for index, (entry, trun) in enumerate(zip(plan, target_runs, strict=True)):
        own = fleet.target_task_states(states, entry)
        reason = target_reason(trun) or (stopped if own["apply"] is None else None)
        state, why = fleet.final_state(
            ledger_state(trun, "production"), states, entry, index, reason
        )
        story = target_story(trun, "production")
        if state == "applied" and story.startswith("applied by run"):
            why = story  # an earlier run's work, left as is
        rows.append({"conn_id": entry["conn_id"], "wave": entry["wave"], "state": state,
                     "why": why})  # fmt: skip
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

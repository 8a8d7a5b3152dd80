"""What a run says to people: the approval's text (what the approver decides on) and the report
at the end (summary.md/.html, each target's state and whose work it is, who answered the
approval, each task's state and why, the ledger as the run left it)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rollout import bundle_snapshot, ledger, lint
from rollout.artifacts import ArtifactDir, list_tree
from rollout.errors import RolloutError, reason_or_killed
from rollout.locktime import describe_tables
from rollout.locktrace import gate_lines, read_trace
from rollout.run import TARGETS, Run


def approval_body(run: Run, facts: dict[str, Any], artifacts_url: str) -> str:
    """What the approver needs, in Markdown: results, the diff, the predicted lock, the window,
    Squawk's findings with the rollout's answers (warnings first)."""
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
            f"- Bundle checksum: `{run.bundle.checksum}`: the bytes staging ran, kept in the "
            "run's artifacts (bundle/); production applies exactly these, and a bundle folder "
            "edited after preflight refuses the apply",
            f"- Validation on staging: {validation['expectations']} expectations, "
            f"{validation['catalog']} catalog checks passed",
            f"- Application tests on staging: {tests['line']}",
            f"- Schema change (db-diff): {diff['change']}; staging/production drift: {drift}",
            *_fleet_lines(pre),
            f"- Production: {pre['production']['locked_rows']:,} rows in {locked}; predicted "
            f"lock on {locked} **{predicted:.1f} s** (budget {s.lock_budget_s:g} s; staging held "
            f"it {facts['apply_staging'].get('lock_seconds') or 0:.2f} s)",
            *trace_lines(run),
            f"- Apply mode in production: {_mode_line(facts.get('check_window_and_budget'))}",
            *_timeouts_line(facts.get("check_window_and_budget")),
            f"- Maintenance window: {s.window.describe()}",
            f"- After the apply: queries watched for {s.monitor_period_s} s; a median over "
            f"{s.regression_threshold:g}x the baseline → {s.on_regression.replace('_', ' ')}",
            f"- Reject (or no answer in {s.approval_timeout_h:g} h) → production untouched, "
            f"staging: {s.on_reject.replace('_', ' ')}",
            f"- Who may answer: {s.describe_approvers(run.actor)}",
            *already_violated_lines(facts.get("check_window_and_budget")),
            *lint.gate_lines(lint.read_report(run.artifacts)),
            "",
            f"Artifacts: {artifacts_url}",
        ]
    )


def trace_lines(run: Run) -> list[str]:
    """Staging's lock trace, statement by statement (rollout.locktrace), when it was taken."""
    trace = read_trace(run.folder("staging"))
    return gate_lines(trace) if trace else []


def already_violated_lines(check: dict[str, Any] | None) -> list[str]:
    """What production already violates before the migration (its suite, run before the gate):
    approving accepts it; after the apply only what is new or worse fails and rolls back."""
    data = (check or {}).get("production_data")
    if not data:
        return []
    if not data["violations"]:
        return [
            f"- Production's data before the migration: {data['expectations']} expectations met, "
            "nothing already violated"
        ]
    return [
        "",
        f"**Production already violates {len(data['violations'])} expectation(s)** before the "
        "migration (not the migration's doing; approving accepts them: after the apply only "
        "what is new or worse fails):",
        "",
        *(f"- {line}" for line in data["violations"]),
    ]


def _mode_line(check: dict[str, Any] | None) -> str:
    """Which apply mode will run and why (the pre-approval check's decision)."""
    if not check or "apply_mode" not in check:
        return "decided at the window"
    line = f"**{check['apply_mode']}** ({check['mode_reason']})"
    if check.get("online_plan"):
        line += f"; {check['online_plan']}"
    return line


def _timeouts_line(check: dict[str, Any] | None) -> list[str]:
    """The role's timeouts against the predicted phase, and what the apply sets instead."""
    return (
        [f"- Timeouts in production: {check['timeouts']}"] if check and "timeouts" in check else []
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


def write_report(run: Run, states: dict[str, str], facts: dict[str, Any]) -> dict:
    """summary.md and summary.html: the outcome, where each target stands and who changed it,
    who answered the approval, each task's state and why, every artifact."""
    outcome = run_outcome(states)
    table = ["| task | state | notes |", "|---|---|---|"]
    for task, state in states.items():
        note = reason_or_killed(task, state, task_note(run.artifacts, task)) or facts.get(task)
        table.append(f"| {task} | {state} | {_note(note)} |")
    targets = {
        target: target_story(run, target, states.get(f"apply_{target}")) for target in TARGETS
    }
    for target in TARGETS:
        keep_ledger(run, target)
    facts_kept = {"outcome": outcome, "states": states, "targets": targets}
    if outcome == NOTHING_TO_DO:
        facts_kept["nothing_to_do"] = task_note(run.artifacts, "preflight")
    run.artifacts.write_json("outcome.json", facts_kept)
    head = [f"- **{target}**: {story}" for target, story in targets.items()]
    head += bundle_lines(run)
    approval = approval_record(run.artifacts)
    if approval:
        head.append(f"- **Approval**: {approval}")
    files = write_summary(
        run.artifacts, run.run_id, run.actor, f"Rollout {run.bundle.version}: {outcome}",
        outcome, [*head, "", *table],
    )  # fmt: skip
    run.say(f"report: {outcome}; {len(files)} artifacts")
    return {"outcome": outcome, "artifacts": files, "targets": targets}


def bundle_lines(run: Run) -> list[str]:
    """Which bytes the run applied, and the edit a step refused if the folder changed."""
    lines = [
        f"- **Bundle**: {run.bundle.path.name}, checksum `{run.bundle.checksum[:12]}` (the copy "
        "preflight kept in bundle/: what staging ran, the approval is for and production applies)"
    ]
    changed = bundle_snapshot.mismatch(run.bundle_home)
    if changed:
        lines.append(
            f"- **Bundle edited after preflight**: {changed['step']} found checksum "
            f"`{changed['on_disk'][:12]}` on disk, not `{changed['approved'][:12]}`; refused, "
            "nothing touched (a new run rolls the edit out)"
        )
    return lines


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
    artifacts.write_json(
        "outcome.json", {"outcome": outcome, "refused": why, "states": states, "targets": {}}
    )
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
    artifacts.write_text("summary.html", summary_html(markdown, outcome))
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


# A run whose version was applied on every target already: its preflight skipped the rest.
NOTHING_TO_DO = "nothing to do: already applied on every target"
# The outcomes a run ends successfully with; any other fails the run.
ENDED_WELL = ("succeeded", NOTHING_TO_DO)


def run_outcome(states: dict[str, str]) -> str:
    """One phrase for how the run ended, from its tasks' states."""
    if states.get("preflight") == "skipped":
        return NOTHING_TO_DO
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


def summary_html(markdown: str, outcome: str) -> str:
    """summary.md as a page of its own (a file to keep or mail: it loads nothing, its links
    name the run's files beside it). The run's review page in Airflow shows it all laid out."""
    import html

    from rollout.markdown_html import render_markdown

    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Rollout: {html.escape(outcome)}"
        f"</title></head><body>{render_markdown(markdown)}</body></html>\n"
    )

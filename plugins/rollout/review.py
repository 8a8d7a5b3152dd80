"""The review page of a run: what a reviewer reads to judge it, built from the run's artifacts
and Airflow's task states, without Airflow (the plugin reads them, a test lays a folder out).

In order: the verdict (succeeded, rolled back, rejected, refused, failed, waiting for approval
or for the window, and why); each step of the story with its state and its evidence (the
validation results failures first, the catalog checks, the db-diff and the drift, the
application tests, the lock predicted and measured, the window's decision, the performance
comparison with its plot and the plans that changed, the rollbacks and their "after rollback"
diff); each target's ledger as this run left it, beside the ledger now when a later run changed
it; who answered the approval, when and with what; the raw files, grouped by target and step.
A fleet run's page has one row per target (wave, state, why), each linking to that target's
own page with the same evidence.

Everything a run wrote may carry database values: the page is made by Jinja2 with autoescape
on, and Markdown by `rollout.markdown_html` (raw HTML escaped, no images). Nothing on a page
loads from anywhere but the run's own routes (its stylesheet, its plots).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote

from markupsafe import Markup

from rollout.errors import reason_or_killed
from rollout.locktrace import TRACE_NAME, blocks_writers, longest_exclusive_hold
from rollout.markdown_html import render_markdown

Reader = Callable[[str], "str | None"]

DAG_ID = "migration_rollout"
FLEET_DAG_ID = "fleet_rollout"
# A fleet target's one task (wave_<k>.target, instance <slot>) runs these steps in order and
# records how each ended in its steps.json (rollout.fleet_steps), its rollback too.
TARGET_STEPS = ("preflight", "apply", "validate", "monitor", "rollback")
# Airflow's states of a task that has not ended, and of one waiting for a person or a time.
UNFINISHED = ("queued", "scheduled", "running", "deferred", "up_for_retry", "restarting")
WAITING_FOR_PERSON = ("awaiting_input", "deferred", "running", "queued", "scheduled")
WAITING_FOR_TIME = ("up_for_reschedule", "running", "queued", "scheduled")
# A page lists the run's files, not the hundred fonts and images of each Data Docs site.
DATA_DOCS = "/data-docs/"


@dataclass(frozen=True)
class Step:
    """One task of the story: its task id, what a reviewer calls it, what it checks, and
    which kind of evidence it left (and on which target)."""

    task: str
    title: str
    what: str
    kind: str
    target: str | None = None


SINGLE_STORY = (
    Step("preflight", "Preflight", "Both targets answer, the bundle is the one the ledger knows, "
         "its own preflight checks pass, nobody else rolls out there; the \"before\" of each "
         "target is kept.", "preflight"),
    Step("apply_staging", "Apply on staging", "The up script under the lock-retry mechanism; "
         "the ledger row in its transaction.", "apply", "staging"),
    Step("validate_staging", "Validation on staging", "The bundle's Great Expectations suite and "
         "catalog checks; what the apply did to existing rows.", "validate", "staging"),
    Step("capture_db_diff", "Schema change and drift", "Staging before and after (what the "
         "migration changed), and staging before against production now (drift).", "diff"),
    Step("run_assignment_tests", "Application tests on staging", "The application's own tests of "
         "this migration, in synthetic tenants made and removed.", "assignment", "staging"),
    Step("check_window_and_budget", "Lock budget and window", "Before anyone is asked: the lock "
         "predicted for production within the budget and a window that can hold it; what production "
         "already violates, for the approver.", "check"),
    Step("approve_production", "Approval", "A person other than the one who triggered the run "
         "decides on the evidence above.", "approval"),
    Step("wait_for_window", "Maintenance window", "Production starts inside the window, when "
         "the predicted lock fits what is left of it.", "window"),
    Step("baseline_production_perf", "Production performance, before", "The application's "
         "queries timed on production before the apply; its suite run, the \"before\" its "
         "validation is judged against.", "baseline", "production"),
    Step("apply_production", "Apply on production", "The up script on production, locking or "
         "online as decided; the ledger row in its transaction.", "apply", "production"),
    Step("validate_production", "Validation on production", "The same suite and catalog checks "
         "on production; only what the migration made new or worse fails.", "validate",
         "production"),
    Step("monitor_production_perf", "Production performance, after", "The same queries after "
         "the apply, against the baseline.", "monitor", "production"),
    Step("rollback_staging", "Rollback of staging", "When a staging step failed or the approval "
         "was not given: only what this run applied.", "rollback", "staging"),
    Step("rollback_production", "Rollback of production", "When a production step failed: only "
         "what this run applied.", "rollback", "production"),
    Step("report", "Report", "Always: the summary, the ledgers as the run left them, the leases "
         "given back; it fails the run unless the rollout succeeded.", "report"),
)  # fmt: skip
FLEET_STAGING_TASKS = (
    "apply_staging", "validate_staging", "capture_db_diff", "run_assignment_tests",
    "check_window_and_budget", "approve_production",
)  # fmt: skip
FLEET_STAGING = (
    Step(
        "preflight",
        "Preflight",
        "Every parameter and every production target checked before anything runs: staging's "
        "own preflight, each production target answering, this run's lease on each.",
        "preflight",
    ),
    *(s for s in SINGLE_STORY if s.task in FLEET_STAGING_TASKS),
)
FLEET_AFTER = (
    Step(
        "rollback_targets",
        "Rollbacks across the fleet",
        "After the waves: with on_target_failure=rollback_all, every target this run applied "
        "once one failed or a wave was rejected; and any target whose task ended after its "
        "apply. A target rolled back in its own task is left alone.",
        "note",
    ),
    *(s for s in SINGLE_STORY if s.task in ("rollback_staging", "report")),
)
TARGET_STORY = (
    Step("preflight", "Preflight and performance baseline", "The target answers, its ledger "
         "matches the bundle, nothing there refuses the migration; its queries timed.",
         "preflight", "production"),
    Step("apply", "Apply", "The up script on this target; the ledger row in its transaction.",
         "apply", "production"),
    Step("validate", "Validation", "The suite and catalog checks on this target.", "validate",
         "production"),
    Step("monitor", "Performance, after", "The same queries after the apply, against the "
         "baseline.", "monitor", "production"),
    Step("rollback", "Rollback", "When this target's validation failed or it regressed (in its "
         "own task), or the fleet's policy rolls every applied target back (rollback_targets).",
         "rollback", "production"),
)  # fmt: skip


@dataclass
class RunRecord:
    """What a review page is made of: the run's files (read through `read`, which returns None
    for a file the run does not have), Airflow's task states now (ids as the tasks see them:
    a mapped task's with `_<map index>`), the run's state, and each target's ledger now ({"rows":
    its rows, "table": as `rollout status` shows it}, or why it could not be read)."""

    dag_id: str
    run_id: str
    files: list[str]
    read: Reader
    states: dict[str, str] = field(default_factory=dict)
    run_state: str | None = None
    current: dict[str, dict[str, Any] | str] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        return self.read(name) if name in self._names else None

    def json(self, name: str) -> Any:
        text = self.text(name)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None

    @cached_property
    def _names(self) -> set[str]:
        return set(self.files)

    @property
    def fleet(self) -> bool:
        return self.dag_id == FLEET_DAG_ID or self.json("fleet-report.json") is not None

    def task_states(self) -> dict[str, str]:
        """Airflow's states now, else those the report kept (outcome.json)."""
        if self.states:
            return self.states
        kept = self.json("outcome.json") or {}
        states = dict(kept.get("states") or {})
        if kept:  # the report wrote it, then failed the run unless it succeeded
            states.setdefault(
                "report",
                "success"
                if kept.get("outcome") == "succeeded" or kept.get("nothing_to_do")
                else "failed",
            )
        return states


# --- the verdict ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    kind: str  # succeeded, rolled-back, rejected, refused, failed, waiting, running
    title: str
    why: list[str]


def first_failure(record: RunRecord, order: list[str], base: str = "") -> tuple[str, str] | None:
    """(task, its reason) of the first task in `order` that failed and said why."""
    states = record.task_states()
    for task in order:
        if states.get(task) == "failed":
            return task, reason_or_killed(task, "failed", reason_of(record, task, base)) or (
                "it gave no reason"
            )
    return None


def reason_of(record: RunRecord, task: str, base: str = "") -> str | None:
    """What a task left to say: why it failed, or why it did nothing (failures/, notes/)."""
    short = task.rsplit(".", 1)[-1]
    for folder in ("failures", "notes"):
        text = record.text(f"{base}{folder}/{short}.txt")
        if text is not None:
            return text.strip()
    return None


def approval_line(record: RunRecord) -> str | None:
    """Who answered the gate, what and when (approval.json), in one line."""
    answer = record.json("approval.json")
    if not answer:
        return None
    at = _when(answer.get("at"))
    if answer.get("answer") == "timed out":
        return f"not answered before the deadline ({at}): counted as a rejection"
    return f"{answer.get('answer', '?')} by {answer.get('by') or 'an unknown user'} at {at}"


def verdict(record: RunRecord) -> Verdict:
    """How the run stands, in one word and the reasons a reviewer needs first."""
    outcome = record.json("outcome.json") or {}
    fleet = record.json("fleet-report.json")
    states = record.task_states()
    if outcome.get("refused"):
        return Verdict("refused", "Refused before any change", [outcome["refused"]])
    order = [s.task for s in SINGLE_STORY]
    if fleet is None and not outcome:
        failed = first_failure(record, order)
        if record.run_state in ("success", "failed") and failed:  # a run older than outcome.json
            title = "Refused before any change" if failed[0] == "preflight" else "Failed"
            kind = "refused" if failed[0] == "preflight" else "failed"
            return Verdict(kind, title, [f"{failed[0]} failed: {failed[1]}"])
        return _unfinished(record, states)
    if fleet is not None:
        return _fleet_verdict(record, fleet, states)
    targets = [f"{t}: {story}" for t, story in (outcome.get("targets") or {}).items()]
    if outcome.get("nothing_to_do"):
        return Verdict("succeeded", "Nothing to do: already applied", [outcome["nothing_to_do"]])
    failed = first_failure(record, order)
    reason = [f"{failed[0]} failed: {failed[1]}"] if failed else []
    if outcome.get("outcome") == "succeeded":
        return Verdict("succeeded", "Succeeded", [*_success_lines(record), *targets])
    if states.get("rollback_production") == "success":
        return Verdict("rolled-back", "Rolled back in production", [*reason, *targets])
    if states.get("approve_production") == "failed":
        answer = record.json("approval.json") or {}
        line = approval_line(record) or "the approval was not given"
        title = "Not approved in time" if answer.get("answer") == "timed out" else "Rejected"
        return Verdict("rejected", title, [line, *targets])
    if failed and failed[0] in ("preflight", "check_window_and_budget"):
        return Verdict("refused", "Refused before production", [*reason, *targets])
    if states.get("rollback_staging") == "success" or (
        failed and failed[0] in ("apply_staging", "validate_staging", "capture_db_diff",
                                 "run_assignment_tests")
    ):  # fmt: skip
        return Verdict("failed", "Failed on staging", [*reason, *targets])
    return Verdict("failed", "Failed", [*reason, outcome.get("outcome", ""), *targets])


def _success_lines(record: RunRecord) -> list[str]:
    lines = []
    for target in ("staging", "production"):
        report = record.json(f"{target}/validation/validation-report.json")
        if report:
            lines.append(f"{target} validation: {_validation_line(report)}")
            if report.get("preexisting"):
                lines.append(
                    f"{target}: {len(report['preexisting'])} violation(s) already there before "
                    "the apply, no worse after (accepted on the approval): "
                    + "; ".join(report["preexisting"][:3])
                )
    monitor = record.json("production/perf/perf-monitor.json")
    if monitor:
        lines.append(f"production performance: {_monitor_line(monitor)}")
    approval = approval_line(record)
    if approval:
        lines.append(f"approval: {approval}")
    return lines


def _unfinished(record: RunRecord, states: Mapping[str, str]) -> Verdict:
    """A run still going: waiting for a person, for the window, or working."""
    if record.run_state in ("success", "failed"):
        return Verdict(
            "failed",
            "Ended without its report",
            [
                f"the run is {record.run_state} but wrote no outcome: its report task "
                f"{states.get('report') or 'did not run'}"
            ],
        )
    gates = [
        t
        for t, s in states.items()
        if t.endswith(("approve_production", ".approve")) and s == "awaiting_input"
    ]
    gates += [
        t
        for t, s in states.items()
        if t.endswith(("approve_production", ".approve"))
        and s in WAITING_FOR_PERSON
        and t not in gates
    ]
    if gates:
        request = record.json("approval-request.json") or {}
        who = ", ".join(request.get("assignees") or []) or "the approvers"
        return Verdict(
            "waiting", "Waiting for approval", [f"{gates[0]} waits for {who} (Required Actions)"]
        )
    sensors = [
        t for t, s in states.items() if t.endswith("wait_for_window") and s in WAITING_FOR_TIME
    ]
    if sensors:
        group = sensors[0].rsplit(".", 1)[0] + "/" if "." in sensors[0] else ""
        decision = record.json(f"{group}window-decision.json") or {}
        return Verdict(
            "waiting",
            "Waiting for the maintenance window",
            [decision.get("reason") or "the window has not been checked yet"],
        )
    running = [t for t, s in states.items() if s in UNFINISHED]
    return Verdict(
        "running", "In progress", [f"now: {', '.join(running)}" if running else "not started yet"]
    )


def _fleet_verdict(record: RunRecord, fleet: dict, states: Mapping[str, str]) -> Verdict:
    rows = fleet.get("targets") or []
    outcome = str(fleet.get("outcome", ""))
    counts = {
        s: sum(r.get("state") == s for r in rows)
        for s in ("applied", "rolled back", "not applied", "refused")
    }
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    trouble = [
        f"{r['conn_id']}: {r['state']}, {r['why']}"
        for r in rows
        if r.get("state") != "applied" and r.get("why")
    ]
    if outcome == "succeeded":
        return Verdict(
            "succeeded",
            "Succeeded",
            [f"all {len(rows)} production targets applied", *_success_lines(record)],
        )
    if outcome.startswith("stopped before production"):
        failed = first_failure(record, [s.task for s in FLEET_STAGING])
        if states.get("approve_production") == "failed":
            return Verdict(
                "rejected",
                "Rejected",
                [approval_line(record) or "the approval was not given", outcome],
            )
        kind = (
            "refused"
            if failed and failed[0] in ("preflight", "check_window_and_budget")
            else "failed"
        )
        title = "Refused before production" if kind == "refused" else "Failed on staging"
        return Verdict(kind, title, [f"{failed[0]} failed: {failed[1]}" if failed else outcome])
    if counts["rolled back"] and not counts["applied"]:
        return Verdict("rolled-back", f"Rolled back: {tally}", trouble[:5])
    return Verdict("failed", f"Failed: {tally}", trouble[:5])


# --- evidence --------------------------------------------------------------------------------


def _validation_line(report: dict) -> str:
    gx = report.get("gx") or {}
    catalog = report.get("catalog") or []
    passed = sum(bool(c.get("passed")) for c in catalog)
    line = f"{gx.get('successful', '?')}/{gx.get('evaluated', '?')} expectations met"
    if catalog:
        line += f", {passed}/{len(catalog)} catalog checks passed"
    return line


def _monitor_line(monitor: dict) -> str:
    comparison = monitor.get("comparison") or {}
    probes = comparison.get("probes") or []
    regressed = [p["probe"] for p in probes if p.get("regressed")]
    if regressed:
        return f"regressed: {', '.join(regressed)}"
    return f"no regression beyond {comparison.get('threshold', '?'):g}x over {len(probes)} probes"


def observed_text(observed: Any) -> str:
    """What GX observed, in words: a count, or the unexpected values it found."""
    if observed is None:
        return "—"
    if isinstance(observed, bool):
        return str(observed).lower()
    if isinstance(observed, int):
        return f"{observed:,}"
    if isinstance(observed, dict) and "unexpected_count" in observed:
        count = observed.get("unexpected_count")
        values = observed.get("partial_unexpected_list") or []
        if not count:
            return "none unexpected" if count == 0 or not values else f"unexpected: {values}"
        shown = ", ".join(str(v) for v in values[:10])
        return f"{count:,} unexpected" + (f": {shown}" if shown else "")
    return json.dumps(observed, default=str) if not isinstance(observed, str) else observed


def validation_evidence(record: RunRecord, folder: str) -> dict | None:
    """A target's validation: the summary, every expectation (failures first) with what it
    expected and what was found, the catalog checks (failures first), the reports."""
    report = record.json(f"{folder}/validation-report.json")
    if report is None:
        return None
    gx = report.get("gx") or {}
    suite = record.json(f"{folder}/validation-{gx.get('suite', 'post_migration')}.json") or {}
    rows = [
        {
            "table": e.get("table"),
            "name": e.get("description") or e.get("expectation"),
            "expectation": e.get("expectation"),
            "success": bool(e.get("success")),
            "observed": observed_text(e.get("observed")),
            "expected": e.get("expected") or "—",
            "query": e.get("query"),
            "error": e.get("error"),
        }
        for e in suite.get("expectations") or []
    ]
    rows.sort(key=lambda r: r["success"])  # failures first, the suite's order otherwise
    catalog = sorted(report.get("catalog") or [], key=lambda c: bool(c.get("passed")))
    docs = f"{folder}/data-docs/index.html"
    return {
        "success": bool(report.get("success")),
        "line": _validation_line(report),
        "failures": report.get("failures") or [],
        "rows": rows,
        "failed_rows": sum(not r["success"] for r in rows),
        "catalog": catalog,
        "catalog_failed": sum(not c.get("passed") for c in catalog),
        "seconds": gx.get("seconds"),
        "report": f"{folder}/validation-report.md",
        "data_docs": f"{folder}/data-docs" if docs in record._names else None,
    }


def already_evidence(record: RunRecord, folder: str) -> dict | None:
    """Production's suite before the apply (rollout.preexisting's checks-before.json): what it
    already violated, each with the rows found; None when the run took no such check."""
    facts = record.json(f"{folder}/checks-before.json")
    if not isinstance(facts, dict):
        return None
    violations = [
        {
            "table": v.get("table"),
            "name": v.get("name"),
            "expected": v.get("expected") or "—",
            "found": f"could not run: {v['error']}"
            if v.get("error")
            else observed_text(v.get("observed")),
        }
        for v in facts.get("violations") or []
    ]
    return {
        "taken_at": facts.get("taken_at"),
        "expectations": facts.get("expectations"),
        "absent_tables": facts.get("absent_tables") or [],
        "violations": violations,
        "file": f"{folder}/checks-before.json",
    }


def judged_evidence(record: RunRecord, folder: str) -> dict | None:
    """The check after the apply judged against production before it: each expectation that
    failed after the apply, with its unexpected rows at the gate, before the apply and after,
    and whose it is (pre-existing, or the migration's: new or worse). None: judged absolutely."""
    report = record.json(f"{folder}/validation-report.json")
    if not isinstance(report, dict) or "judged" not in report:
        return None
    rows = [
        {**j, "the_migrations": j.get("verdict") in ("new", "worse")}
        for j in report.get("judged") or []
        if j.get("verdict") != "ok"
    ]
    rows.sort(key=lambda j: not j["the_migrations"])  # the migration's first
    return {
        "rows": rows,
        "preexisting": sum(j["verdict"] == "pre-existing" for j in rows),
        "the_migrations": sum(j["the_migrations"] for j in rows),
    }


def diff_evidence(record: RunRecord, name: str) -> dict | None:
    """A db-diff as the page lays it out (its JSON), or its text for an older run."""
    facts = record.json(name.removesuffix(".txt") + ".json")
    if facts is not None:
        return {"file": name, **facts}
    text = record.text(name)
    return None if text is None else {"file": name, "text": text}


def assignment_evidence(record: RunRecord, folder: str) -> dict | None:
    facts = record.json(f"{folder}/assignment-report.json")
    if facts is None:
        return None
    tests = sorted(facts.get("tests") or [], key=lambda t: t.get("outcome") == "passed")
    return {
        **facts,
        "tests": tests,
        "failures": [t for t in tests if t.get("outcome") in ("failed", "error")],
        "report": f"{folder}/assignment-report.md",
        "output": f"{folder}/assignment-output.txt",
    }


def ledger_of(record: RunRecord, base: str, target: str) -> dict | None:
    """The target's ledger as this run left it (`<target>/ledger.json`)."""
    return record.json(f"{base}{target}/ledger.json")


def own_rows(record: RunRecord, base: str, target: str, direction: str) -> list[dict]:
    """This run's ledger rows on a target in one direction (up: applies, down: rollbacks)."""
    kept = ledger_of(record, base, target) or {}
    return [
        r for r in kept.get("rows") or [] if r.get("this_run") and r.get("direction") == direction
    ]


def perf_evidence(record: RunRecord, folder: str, phase: str) -> dict | None:
    """The baseline, or the comparison after the apply: the plot, each probe, plans changed."""
    if phase == "baseline":
        baseline = record.json(f"{folder}/perf-baseline.json")
        if baseline is None:
            return None
        stats = baseline.get("stats") or {}
        return {
            "phase": phase,
            "plot": _present(record, f"{folder}/perf-baseline.png"),
            "report": f"{folder}/perf-baseline.md",
            "taken_at": baseline.get("taken_at"),
            "probes": [{"probe": k, **v} for k, v in stats.items()],
        }
    monitor = record.json(f"{folder}/perf-monitor.json")
    if monitor is None:
        return None
    comparison = monitor.get("comparison") or {}
    probes = comparison.get("probes") or []
    changed = [
        {
            "probe": p["probe"],
            "before": p.get("plan_before") or [],
            "after": p.get("plan_after") or [],
            "plan_before": _present(record, f"{folder}/plans/baseline/{p['probe']}.txt"),
            "plan_after": _present(record, f"{folder}/plans/monitor/{p['probe']}.txt"),
            "text_before": record.text(f"{folder}/plans/baseline/{p['probe']}.txt"),
            "text_after": record.text(f"{folder}/plans/monitor/{p['probe']}.txt"),
        }
        for p in probes
        if p.get("plan_changed")
    ]
    return {
        "phase": phase,
        "ok": bool(monitor.get("ok")),
        "line": _monitor_line(monitor),
        "comparison": comparison,
        "probes": probes,
        "changed": changed,
        "plot": _present(record, f"{folder}/perf-monitor.png"),
        "report": f"{folder}/perf-monitor.md",
    }


def _present(record: RunRecord, name: str) -> str | None:
    return name if name in record._names else None


def rollback_evidence(record: RunRecord, base: str, target: str) -> dict:
    folder = f"{base}{target}/rollback"
    conflicts = record.json(f"{folder}/down-conflicts.json")
    return {
        "rows": own_rows(record, base, target, "down"),
        "after": diff_evidence(record, f"{folder}/db-diff-after-rollback.txt"),
        "conflicts": len(conflicts) if isinstance(conflicts, list) else None,
        "conflicts_file": f"{folder}/down-conflicts.json",
        "exported": [f for f in record.files if f.startswith(f"{folder}/") and f.endswith(".csv")],
    }


def lint_evidence(record: RunRecord) -> dict | None:
    """Squawk's findings as preflight kept them (lint.json): the warnings a reviewer must read
    first, then what the bundle's author accepted, then what the rollout answers."""
    report = record.json("lint.json")
    if not report:
        return None
    order = {"warning": 0, "accepted": 1, "answered": 2}
    findings = sorted(report.get("findings") or [], key=lambda f: order.get(f.get("status"), 3))
    return {**report, "findings": findings}


def lock_evidence(record: RunRecord, base: str, target: str, decision: str) -> dict:
    """The lock measured on the target by this run's apply, beside the one predicted for it."""
    rows = [r for r in own_rows(record, base, target, "up") if r.get("outcome") == "applied"]
    predicted = record.json(decision) or {}
    return {
        "measured_s": rows[-1].get("lock_s") if rows else None,
        "predicted_s": predicted.get("predicted_lock_s"),
        "budget_s": predicted.get("lock_budget_s"),
        "mode": predicted.get("apply_mode"),
    }


def trace_evidence(trace: Mapping[str, Any] | None) -> dict | None:
    """The lock trace as the page's table: each statement, the locks it took first (those that
    make writers wait marked), its time here and predicted for production."""
    if not trace:
        return None
    rows = []
    for entry in trace.get("statements", []):
        locks = [
            {"text": f"{lock['mode']} on {lock['relation']}" + ("" if lock["existing"] else " (new)"),
             "strong": lock["existing"] and blocks_writers(lock["mode"])}
            for lock in entry["locks"]
        ]  # fmt: skip
        held = [f"{mode} on {table}" for table, mode in entry.get("holding", {}).items()]
        rows.append(
            {"n": entry["n"], "phase": entry["phase"], "label": entry["label"],
             "sql": entry["sql"], "locks": locks, "held": held, "seconds": entry["seconds"],
             "staging_rows": sum(entry.get("staging_rows", {}).values()),
             "production_rows": sum(v or 0 for v in entry.get("production_rows", {}).values()),
             "predicted_s": entry.get("predicted_s"),
             "waits": any(blocks_writers(m) for m in entry.get("holding", {}).values())}
        )  # fmt: skip
    return {"rows": rows, "longest": longest_exclusive_hold(trace), "holds": trace.get("holds", [])}


def step_view(
    record: RunRecord,
    step: Step,
    *,
    state: str | None = None,
    base: str = "",
    wave: int | None = None,
) -> dict:
    """One step as the page shows it: its state now (`state`, else its task's), what it said,
    and its evidence."""
    state = state or record.task_states().get(step.task)
    view: dict[str, Any] = {
        "task": step.task,
        "title": step.title,
        "what": step.what,
        "kind": step.kind,
        "state": state or "not run",
        "anchor": f"step-{step.task.replace('.', '-')}",
        "failure": None,
        "note": None,
        "evidence": {},
    }
    short = step.task.rsplit(".", 1)[-1]
    failure = record.text(f"{base}failures/{short}.txt")
    note = record.text(f"{base}notes/{short}.txt")
    view["failure"] = reason_or_killed(step.task, state, failure.strip() if failure else None)
    view["note"] = note.strip() if note else None
    target = step.target
    evidence = view["evidence"]
    if step.kind == "preflight":
        evidence["run"] = record.json("run.json") if not base else None
        evidence["lint"] = lint_evidence(record) if not base else None
        # A fleet target's preflight takes its performance baseline too.
        evidence["perf"] = (
            perf_evidence(record, f"{base}production/perf", "baseline") if base else None
        )
        evidence["already"] = (
            already_evidence(record, f"{base}production/checks-before-apply") if base else None
        )
    elif step.kind == "apply":
        evidence["rows"] = own_rows(record, base, target, "up")
        if target == "production":
            decision = (
                f"wave_{wave}/window-decision.json" if wave is not None else "window-decision.json"
            )
            evidence["lock"] = lock_evidence(record, base, target, decision)
        else:
            evidence["lock"] = lock_evidence(record, base, target, "lock-and-window.json")
            evidence["lock"]["predicted_s"] = None  # staging is measured, production predicted
        evidence["trace"] = trace_evidence(record.json(f"{base}{target}/{TRACE_NAME}"))
    elif step.kind == "validate":
        evidence["validation"] = validation_evidence(record, f"{base}{target}/validation")
        evidence["judged"] = judged_evidence(record, f"{base}{target}/validation")
    elif step.kind == "diff":
        evidence["change"] = diff_evidence(record, "db-diff.txt")
        evidence["drift"] = diff_evidence(record, "drift-db-diff.txt")
    elif step.kind == "assignment":
        evidence["tests"] = assignment_evidence(record, f"{target}/assignment")
    elif step.kind == "check":
        evidence["check"] = record.json("lock-and-window.json")
        evidence["already"] = already_evidence(record, "production/checks-before-approval")
    elif step.kind == "approval":
        evidence["answer"] = record.json("approval.json")
        evidence["request"] = record.json("approval-request.json")
    elif step.kind == "window":
        evidence["decision"] = record.json("window-decision.json")
    elif step.kind in ("baseline", "monitor"):
        evidence["perf"] = perf_evidence(record, f"{base}{target}/perf", step.kind)
        if step.kind == "baseline":
            evidence["already"] = already_evidence(record, f"{base}{target}/checks-before-apply")
    elif step.kind == "rollback":
        evidence["rollback"] = rollback_evidence(record, base, target)
    return view


# --- ledgers ---------------------------------------------------------------------------------


def _row_key(row: Mapping[str, Any]) -> tuple:
    return (row.get("id"), row.get("outcome"), row.get("run_id"))


def version_state(rows: list[dict], version: str | None, run_id: str | None = None) -> str:
    """applied / rolled back / not applied, as these rows leave the version, and by which run
    (`run_id`: this run's)."""
    last = [
        r
        for r in rows
        if r.get("version") == version and r.get("outcome") in ("applied", "rolled_back")
    ]
    if not last:
        return "not applied"
    row = last[-1]
    state = "applied" if row["outcome"] == "applied" else "rolled back"
    by = "this run" if row.get("run_id") == run_id else f"run {row.get('run_id')}"
    return f"{state} by {by}"


def ledger_view(record: RunRecord, role: str, conn_id: str, base: str, target: str) -> dict:
    """A target's ledger as this run left it, and now when that differs (a later run): `now`
    is what the plugin read (its rows and its `rollout status` table), or why it could not."""
    version = (record.json("run.json") or {}).get("version")
    kept = ledger_of(record, base, target)
    now = record.current.get(conn_id)
    view: dict[str, Any] = {
        "role": role,
        "conn_id": conn_id,
        "version": version,
        "kept": None,
        "now": None,
        "now_error": None,
        "differs": False,
    }
    if kept is not None:
        rows = kept.get("rows") or []
        view["kept"] = {
            "rows": rows,
            "taken_at": kept.get("taken_at"),
            "error": kept.get("error"),
            "state": version_state(rows, version, record.run_id),
        }
    view["link"] = f"ledgers/{quote(conn_id, safe='')}"  # the ledger now, on its own page
    if isinstance(now, str):
        view["now_error"] = now
    elif now is not None:
        view["table"] = now.get("table")
        rows = [{**r, "this_run": r.get("run_id") == record.run_id} for r in now.get("rows", [])]
        kept_keys = {_row_key(r) for r in (view["kept"] or {}).get("rows", [])}
        for row in rows:
            row["later"] = view["kept"] is not None and _row_key(row) not in kept_keys
        view["now"] = {"rows": rows, "state": version_state(rows, version, record.run_id)}
        view["differs"] = (
            view["kept"] is None or any(r["later"] for r in rows) or (len(rows) != len(kept_keys))
        )
    return view


# --- files -----------------------------------------------------------------------------------


def file_groups(files: list[str]) -> list[dict]:
    """The run's files grouped by target and step ("staging / validation", "targets /
    p_eu_1 / production / perf"), a Data Docs site as one entry (its index and a download)."""
    groups: dict[str, list[dict]] = {}
    seen_docs = set()
    for name in files:
        if DATA_DOCS in f"/{name}":
            folder = name[: name.index("data-docs/") + len("data-docs")]
            if folder in seen_docs:
                continue
            seen_docs.add(folder)
            entry = {
                "name": folder + "/",
                "data_docs": folder,
                "index": f"{folder}/index.html" if f"{folder}/index.html" in files else None,
            }
        else:
            entry = {"name": name, "markdown": name.endswith(".md")}
        parts = name.split("/")
        head: list[str] = []
        if parts[0] == "targets" and len(parts) > 2:
            head, parts = parts[:2], parts[2:]
        if parts[0] in ("staging", "production") and len(parts) > 2:
            head += parts[:2]
        elif len(parts) > 1:
            head += parts[:1]
        groups.setdefault(" / ".join(head) or "the run", []).append(entry)
    order = sorted(groups, key=lambda g: (g != "the run", g.startswith("targets"), g))
    return [{"title": g, "files": groups[g]} for g in order]


# --- the pages -------------------------------------------------------------------------------


def run_targets(record: RunRecord) -> list[tuple[str, str]]:
    """(role, connection id) of each target the run names in run.json, staging first."""
    named = (record.json("run.json") or {}).get("targets") or {}
    found: list[tuple[str, str]] = []
    if not isinstance(named, dict):
        return found
    for role, value in sorted(named.items(), key=lambda t: t[0] != "staging"):
        for conn_id in value if isinstance(value, list) else [value]:
            if isinstance(role, str) and isinstance(conn_id, str) and (role, conn_id) not in found:
                found.append((role, conn_id))
    return found


def fleet_plan(record: RunRecord) -> list[dict]:
    """Each production target of a fleet run: conn_id, wave, slot, its place in the plan, and
    its state and why from the report (when the run has one)."""
    facts = record.json("run.json") or {}
    waves = facts.get("waves") or []
    reported = {
        r["conn_id"]: r for r in (record.json("fleet-report.json") or {}).get("targets") or []
    }
    plan = []
    for wave, members in enumerate(waves):
        for slot, conn_id in enumerate(members):
            row = reported.get(conn_id, {})
            plan.append(
                {
                    "conn_id": conn_id,
                    "wave": wave,
                    "slot": slot,
                    "index": len(plan),
                    "state": row.get("state"),
                    "why": row.get("why", ""),
                }
            )
    return plan


def target_task_key(entry: Mapping[str, Any]) -> str:
    """A fleet target's task as Airflow's states name it: wave_<k>.target_<slot>."""
    return f"wave_{entry['wave']}.target_{entry['slot']}"


def target_progress(record: RunRecord, entry: Mapping[str, Any]) -> str:
    """A target's state while the fleet runs (before its report): where its task is."""
    state = record.task_states().get(target_task_key(entry))
    if state in ("failed", "upstream_failed"):
        return "failed"
    if state == "success":
        return "healthy"
    if state == "skipped":
        return "stopped"
    return state if state in UNFINISHED else "pending"


def target_step_states(record: RunRecord, entry: Mapping[str, Any]) -> dict[str, str]:
    """How each step of a fleet target ended (its steps.json); a step it has not reached takes
    its task's state when that task is still going, was skipped or never ran."""
    ended = record.json(f"targets/{entry['conn_id']}/steps.json") or {}
    task = record.task_states().get(target_task_key(entry))
    states: dict[str, str] = {}
    for step in TARGET_STEPS:
        if step in ended:
            states[step] = ended[step]
        elif step == "rollback":
            states[step] = "not run"
        elif task in UNFINISHED and task not in states.values():
            states[step] = task  # the step it is on now
        elif task in ("skipped", "upstream_failed") and not ended:
            states[step] = task
        else:
            states[step] = "not run"
    return states


def page_context(record: RunRecord) -> dict:
    """Everything the run's review page shows."""
    fleet = record.fleet
    targets = run_targets(record)
    if fleet:
        story = [step_view(record, s) for s in FLEET_STAGING]
        after = [step_view(record, s) for s in FLEET_AFTER]
        plan = fleet_plan(record)
        for entry in plan:
            entry["progress"] = entry["state"] or target_progress(record, entry)
            entry["href"] = f"targets/{quote(entry['conn_id'], safe='')}/"
        states = record.task_states()
        gates = [
            {
                "wave": k,
                "state": states.get(f"wave_{k}.approve") or "not run",
                "window": states.get(f"wave_{k}.wait_for_window") or "not run",
            }
            for k in sorted({e["wave"] for e in plan})
        ]
        ledgers = [
            ledger_view(record, "staging", c, "", "staging")
            for role, c in targets
            if role == "staging"
        ]
        ledgers += [
            ledger_view(
                record, "production", e["conn_id"], f"targets/{e['conn_id']}/", "production"
            )
            for e in plan
        ]
    else:
        story = [step_view(record, s) for s in SINGLE_STORY]
        after, plan, gates = [], [], []
        ledgers = [ledger_view(record, role, c, "", role) for role, c in targets]
    facts = record.json("run.json") or {}
    return {
        "root": "",
        "record": record,
        "fleet": fleet,
        "facts": facts,
        "verdict": verdict(record),
        "story": story,
        "after": after,
        "plan": plan,
        "gates": gates,
        "ledgers": ledgers,
        "mismatch": record.json("bundle-mismatch.json"),
        "approval": {
            "answer": record.json("approval.json"),
            "request": record.json("approval-request.json"),
        },
        "groups": file_groups(record.files),
    }


def target_context(record: RunRecord, conn_id: str) -> dict | None:
    """A fleet target's own page: its story, its ledger, its files; None when the run has no
    such target."""
    entry = next((e for e in fleet_plan(record) if e["conn_id"] == conn_id), None)
    if entry is None:
        return None
    base = f"targets/{conn_id}/"
    states = target_step_states(record, entry)
    story = [
        step_view(record, s, state=states[s.task], base=base, wave=entry["wave"])
        for s in TARGET_STORY
    ]
    entry["progress"] = entry["state"] or target_progress(record, entry)
    return {
        "root": "../../",
        "record": record,
        "entry": entry,
        "facts": record.json("run.json") or {},
        "story": story,
        "window": record.json(f"wave_{entry['wave']}/window-decision.json"),
        "ledgers": [ledger_view(record, "production", conn_id, base, "production")],
        "groups": file_groups([f for f in record.files if f.startswith(base)]),
    }


@cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,  # a file an older run lacks is simply not shown
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["file_url"] = lambda name, root="": f"{root}files/{quote(name)}"
    env.filters["view_url"] = lambda name, root="": f"{root}view/{quote(name)}"
    env.filters["seconds"] = _seconds
    env.filters["when"] = _when
    env.filters["thousands"] = _thousands
    env.filters["state_class"] = lambda state: "state-" + str(state or "none").replace(" ", "_")
    return env


def _when(value: Any) -> str:
    """A timestamp as people read it: to the second, in UTC."""
    if not value or not isinstance(value, str | dt.datetime):
        return "—"
    text = str(value).replace("T", " ")
    utc = len(text) == 19 or text[19:].lstrip(".0123456789").startswith(("+00", "Z"))
    return f"{text[:19]} UTC" if utc else text


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    return f"{value:.2f} s"


def _thousands(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def markdown(text: str, root: str = "", folder: str = "") -> Markup:
    """Markdown a run wrote, as HTML whose relative links open the run's files (a .md file
    rendered, anything else as served)."""

    def rewrite(href: str) -> str:
        name = f"{folder}/{href}" if folder else href
        route = "view/" if name.split("#")[0].endswith(".md") else "files/"
        return f"{root}{route}{name}"

    return Markup(render_markdown(text, rewrite))  # escaped by markdown-it


def render(template: str, **context: Any) -> str:
    return _environment().get_template(template).render(markdown=markdown, **context)


def review_page(record: RunRecord) -> str:
    """The run's review page (HTML)."""
    return render("review.html", **page_context(record))


def target_page(record: RunRecord, conn_id: str) -> str | None:
    """A fleet target's page (HTML), or None when the run has no such target."""
    context = target_context(record, conn_id)
    return None if context is None else render("target.html", **context)


def markdown_page(record: RunRecord, name: str) -> str | None:
    """A Markdown file of the run, rendered (its relative links to the run's files)."""
    text = record.text(name)
    if text is None:
        return None
    folder = name.rsplit("/", 1)[0] if "/" in name else ""
    root = "../" * (name.count("/") + 1)
    return render(
        "markdown.html", record=record, name=name, root=root, body=markdown(text, root, folder)
    )

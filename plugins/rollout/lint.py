"""Squawk's findings on a bundle's up.sql and down.sql, each with what the rollout answers.

Squawk (the `squawk-cli` wheel's binary, run offline with the repository's `.squawk.toml`)
lints a migration without knowing how it will run. Some of its advice this tool already
follows when it runs the script: each attempt's `lock_timeout` (rollout.lock_retries),
production's `statement_timeout`, the online apply for an exclusion constraint (which has no
NOT VALID), the export of a dropped table's rows, the lock measured on staging and predicted
for production. Such a finding is kept and shown with that answer beside it, never hidden; a
finding the rollout does not answer stays a warning for the reviewer, unless the manifest's
`[lint] accepted` names its rule with the author's reason. Findings never refuse a run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rollout.errors import RolloutError
from rollout.locktime import STATEMENT_TIMEOUT_FACTOR, STATEMENT_TIMEOUT_FLOOR_S
from rollout.migrations import LOCK_PHASE_MARKER, MigrationBundle
from rollout.paths import PROJECT_ROOT

CONFIG = PROJECT_ROOT / ".squawk.toml"
SCRIPTS = ("up.sql", "down.sql")
REPORT_NAME = "lint.json"
RULE_URL = "https://squawkhq.com/docs/{rule}"
SQUAWK_TIMEOUT_S = 60

ANSWERED, ACCEPTED, WARNING = "answered", "accepted", "warning"

_LOCK_TIMEOUT = (
    "the rollout runs the script under its lock retries: each attempt sets a short lock_timeout "
    "in its own transaction, gives way and retries, and never waits unbounded "
    "(rollout.lock_retries)"
)
_STATEMENT_TIMEOUT = (
    "every attempt of the apply and of the rollback sets its own statement_timeout in its "
    "transaction (rollout.timeouts): production's apply "
    f"{STATEMENT_TIMEOUT_FACTOR:g}x the lock predicted from staging's measured one (at least "
    f"{STATEMENT_TIMEOUT_FLOOR_S:g} s), staging's apply and a rollback "
    f"{STATEMENT_TIMEOUT_FACTOR:g}x the lock budget"
)
_NO_NOT_VALID = (
    "an exclusion constraint cannot be added NOT VALID (PostgreSQL has no NOT VALID, USING INDEX "
    "or CONCURRENTLY for EXCLUDE), so this advice cannot be followed"
)
_MEASURED = (
    "the lock it takes is measured on staging's rows, statement by statement "
    "(staging/lock-trace.json), and predicted for production's row counts; the approver sees "
    "it against the lock budget before the window opens"
)
# Rules whose hazard is how long a lock is held: the rollout measures and predicts that lock.
_LOCK_RULES = frozenset({
    "adding-field-with-default", "adding-foreign-key-constraint", "adding-not-nullable-field",
    "adding-primary-key-constraint", "changing-column-type", "constraint-missing-not-valid",
    "disallowed-unique-constraint", "prefer-text-field", "require-concurrent-index-creation",
    "require-concurrent-index-deletion",
})  # fmt: skip
_DROP_TABLE = re.compile(r"\bDROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?([\w.\"]+)", re.IGNORECASE)


class LintError(RolloutError):
    """Squawk could not be run, or said something that is not its JSON report."""


@dataclass(frozen=True)
class Finding:
    script: str  # "up.sql" or "down.sql"
    line: int  # 1-based, where the statement (or its clause) Squawk points at starts
    line_end: int
    rule: str
    message: str
    help: str | None
    statement: str  # the lines Squawk points at, as written
    status: str  # ANSWERED, ACCEPTED or WARNING
    note: str | None  # how the rollout answers it, or the author's reason for accepting it

    @property
    def link(self) -> str:
        return RULE_URL.format(rule=self.rule)

    @property
    def first_line(self) -> str:
        return next((s.strip() for s in self.statement.splitlines() if s.strip()), "")

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "link": self.link, "first_line": self.first_line}


@dataclass(frozen=True)
class LintReport:
    squawk: str  # the version that ran
    findings: tuple[Finding, ...]
    unmatched: tuple[str, ...] = ()  # rules the manifest accepts that Squawk did not find

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.findings)

    def summary(self) -> str:
        if not self.findings:
            return f"Squawk ({self.squawk}): no finding in {' and '.join(SCRIPTS)}"
        return (
            f"Squawk ({self.squawk}): {len(self.findings)} finding(s) in {' and '.join(SCRIPTS)}: "
            f"{self.count(ANSWERED)} answered by how the rollout runs the script, "
            f"{self.count(ACCEPTED)} accepted in manifest.toml, "
            f"{self.count(WARNING)} warning(s) to read"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "squawk": self.squawk,
            "summary": self.summary(),
            "counts": {s: self.count(s) for s in (ANSWERED, ACCEPTED, WARNING)},
            "findings": [f.as_json() for f in self.findings],
            "unmatched_accepted": list(self.unmatched),
        }


def squawk_binary() -> str:
    """The squawk installed with the project (beside this Python, else on PATH)."""
    beside = Path(sys.executable).parent / "squawk"
    found = str(beside) if beside.is_file() else shutil.which("squawk")
    if not found:
        raise LintError(
            "squawk is not installed: install the project's locked dependencies (`make install`, "
            "or `uv sync`; it comes with squawk-cli)"
        )
    return found


def run_squawk(folder: Path, scripts: tuple[str, ...] = SCRIPTS) -> tuple[str, list[dict]]:
    """Squawk's version and its raw JSON findings on the scripts of folder (paths as named)."""
    if not CONFIG.is_file():
        raise LintError(
            f"squawk's configuration {CONFIG} is missing: restore it from the repository"
        )
    binary = squawk_binary()
    present = [name for name in scripts if (folder / name).is_file()]
    if not present:
        return _version(binary), []
    done = subprocess.run(
        [binary, "--config", str(CONFIG), "--reporter", "json", *present],
        cwd=folder, capture_output=True, text=True, timeout=SQUAWK_TIMEOUT_S, check=False,
    )  # fmt: skip
    # Squawk exits 1 when it finds something; anything else is a failure to lint.
    try:
        raw = json.loads(done.stdout) if done.returncode in (0, 1) else None
    except ValueError:
        raw = None
    if not isinstance(raw, list):
        said = (done.stderr or done.stdout).strip().splitlines()
        raise LintError(
            f"squawk failed on {folder.name} (exit {done.returncode}): "
            f"{said[-1] if said else 'no output'}"
        )
    return _version(binary), raw


def _version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip().removeprefix("squawk ").strip() or "unknown version"


def lint_bundle(bundle: MigrationBundle) -> LintReport:
    """Squawk on the bundle's up.sql and down.sql, each finding with the rollout's answer, the
    author's accepted reason, or as a warning. Raises BundleError for a broken manifest."""
    manifest = bundle.manifest
    version, raw = run_squawk(bundle.path)
    accepted = {a.rule: a.reason for a in manifest.lint_accepted}
    texts = {name: _lines(bundle.path / name) for name in SCRIPTS}
    findings = []
    for item in raw:
        script = Path(item["file"]).name
        lines = texts.get(script, [])
        first, last = int(item["line"]), int(item.get("line_end", item["line"]))  # 0-based
        statement = "\n".join(lines[first : last + 1]).strip("\n")
        rule = item["rule_name"]
        answer = _answer(bundle, script, rule, statement, first, lines)
        status, note = (
            (ANSWERED, answer) if answer
            else (ACCEPTED, accepted[rule]) if rule in accepted
            else (WARNING, None)
        )  # fmt: skip
        findings.append(
            Finding(script, first + 1, last + 1, rule, item.get("message", ""),
                    item.get("help"), statement, status, note)
        )  # fmt: skip
    findings.sort(key=lambda f: (SCRIPTS.index(f.script) if f.script in SCRIPTS else 9, f.line))
    unmatched = tuple(rule for rule in accepted if rule not in {f.rule for f in findings})
    return LintReport(version, tuple(findings), unmatched)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def _answer(
    bundle: MigrationBundle, script: str, rule: str, statement: str, line: int, lines: list[str]
) -> str | None:
    """How the way the rollout runs this script answers the finding; None when it does not."""
    manifest = bundle.manifest
    if rule == "require-lock-timeout":
        return _LOCK_TIMEOUT
    if rule == "require-statement-timeout":
        return _STATEMENT_TIMEOUT
    if rule == "constraint-missing-not-valid" and re.search(r"\bEXCLUDE\b", statement, re.I):
        in_lock_phase = any(LOCK_PHASE_MARKER in text for text in lines[:line])
        if manifest.online is not None and in_lock_phase:
            return (
                f"{_NO_NOT_VALID}. The online apply is the answer: apply_mode online builds "
                f"{manifest.online.table} with the constraint beside the live table while the "
                "application writes, and swaps it in under a short lock"
            )
        return f"{_NO_NOT_VALID}. Instead {_MEASURED}"
    if rule == "ban-drop-table":
        dropped = _DROP_TABLE.search(statement)
        exported = manifest.rules(script.removesuffix(".sql")).export
        if dropped and dropped.group(1).replace('"', "") in exported:
            return (
                f"its rows are exported to the run's artifacts first, in the same transaction, and "
                f"the count checked at the drop (manifest.toml [{script.removesuffix('.sql')}] "
                "export)"
            )
        return None
    if rule in _LOCK_RULES:
        return _MEASURED
    return None


def write_report(report: LintReport, artifacts: Any) -> None:
    """lint.json through the run's artifact writer."""
    artifacts.write_json(REPORT_NAME, report.as_json())


def read_report(artifacts: Any) -> dict[str, Any] | None:
    """The run's lint.json, None when preflight has not written one."""
    path = artifacts.path(REPORT_NAME)
    return json.loads(path.read_text()) if path.exists() else None


def finding_lines(report: dict[str, Any], indent: str = "  ") -> list[str]:
    """One line per finding, for a terminal: where, the rule and its link, what, and the note."""
    return [
        f"{indent}{f['script']}:{f['line']} {f['rule']} ({f['link']}): {f['message']} "
        f"`{f['first_line']}` -> {f['status']}" + (f": {f['note']}" if f["note"] else "")
        for f in report["findings"]
    ]


def gate_lines(report: dict[str, Any] | None) -> list[str]:
    """The findings in the approval's Markdown: warnings first, each with its rule's link."""
    if not report:
        return []
    if not report["findings"]:
        return ["", f"**Lint**: {report['summary']}"]
    order = {WARNING: 0, ACCEPTED: 1, ANSWERED: 2}
    lines = ["", f"**Lint**: {report['summary']} (lint.json):", ""]
    for f in sorted(report["findings"], key=lambda f: order.get(f["status"], 3)):
        said = {
            WARNING: "**warning**, not answered by the rollout: read it",
            ACCEPTED: f"accepted by the bundle's author: {f['note']}",
            ANSWERED: f"answered: {f['note']}",
        }.get(f["status"], f["status"])
        lines.append(
            f"- `{f['script']}:{f['line']}` [{f['rule']}]({f['link']}) `{f['first_line']}`: "
            f"{f['message']} ({said})"
        )
    return lines

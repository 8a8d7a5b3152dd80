"""Run the assignment suite (tests/assignment/) against a target and report it.

The suite is ordinary pytest, run in a child process so that the caller (an Airflow task)
keeps none of pytest's state. It writes only in synthetic tenants that it creates and
removes. JUnit XML and a Markdown report go to the artifacts folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from rollout.artifacts import ArtifactDir, as_artifact_dir
from rollout.paths import PROJECT_ROOT
from rollout.secrets import scrub_text, split_password

SUITE_DIR = PROJECT_ROOT / "tests" / "assignment"


@dataclass(frozen=True)
class AssignmentResult:
    passed: int
    failed: int
    errors: int
    skipped: int
    seconds: float
    failures: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return self.failed == 0 and self.errors == 0 and self.passed > 0

    def line(self) -> str:
        return f"{self.passed} passed, {self.failed} failed, {self.errors} errors, {self.skipped} skipped"


def run_assignment_suite(
    dsn: str,
    artifacts: ArtifactDir | Path | str,
    suite_dir: Path = SUITE_DIR,
    timeout_s: int = 600,
) -> AssignmentResult:
    """Run the pytest suite in `suite_dir` against dsn; its JUnit XML and a report in
    artifacts. The suite reads its target from ROLLOUT_ASSIGNMENT_DSN."""
    out = as_artifact_dir(artifacts)
    # pytest prints a failing test's arguments, the DSN among them: the password goes to the
    # child through PGPASSWORD instead, and what it writes is scrubbed on top of that.
    bare_dsn, password = split_password(dsn)
    child_env = {
        **os.environ,
        "ROLLOUT_ASSIGNMENT_DSN": bare_dsn,
        "PGOPTIONS": "-c lock_timeout=30s",
    }  # no test may wait on a lock for long
    if password:
        child_env["PGPASSWORD"] = password
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rollout-assignment-") as basetemp:
        junit = Path(basetemp) / "assignment-junit.xml"
        command = [
            sys.executable, "-m", "pytest", str(suite_dir),
            f"--confcutdir={suite_dir}",  # the project's own conftest (its database fixtures) stays out
            # its own temp root: pytest prunes old ones under the shared root, a caller's included
            f"--basetemp={basetemp}",
            f"--junitxml={junit}", "-p", "no:cacheprovider", "-q",
        ]  # fmt: skip
        completed = subprocess.run(
            command, cwd=PROJECT_ROOT, env=child_env,
            capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
        out.write_text("assignment-output.txt", completed.stdout + completed.stderr)
        if not junit.is_file():
            raise RuntimeError(
                "the assignment suite did not run: " + scrub_text(completed.stderr.strip()[-2000:])
            )
        out.write_bytes("assignment-junit.xml", junit.read_bytes())  # scrubbed on the way
        result = _parse_junit(junit, time.perf_counter() - started)
        out.write_text("assignment-report.md", _markdown(junit, result))
        out.write_json("assignment-report.json", _report_json(junit, result))
    return result


def _cases(junit: Path) -> list[tuple[str, str, str]]:
    """(test name, outcome, message) for each test case."""
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or "").splitlines()[0] if node.get("message") else ""
        cases.append((name, outcome, message))
    return cases


def _parse_junit(junit: Path, seconds: float) -> AssignmentResult:
    cases = _cases(junit)
    count = {
        o: sum(1 for _, outcome, _ in cases if outcome == o)
        for o in ("passed", "failed", "error", "skipped")
    }
    return AssignmentResult(
        passed=count["passed"], failed=count["failed"], errors=count["error"], skipped=count["skipped"],
        seconds=round(seconds, 1),
        failures=[f"{name}: {message}" for name, outcome, message in cases if outcome in ("failed", "error")],
    )  # fmt: skip


def _report_json(junit: Path, result: AssignmentResult) -> dict:
    """The counts and every test with its outcome and message, for the review page."""
    return {
        "success": result.success,
        "line": result.line(),
        "passed": result.passed,
        "failed": result.failed,
        "errors": result.errors,
        "skipped": result.skipped,
        "seconds": result.seconds,
        "tests": [
            {"name": name, "outcome": outcome, "message": message}
            for name, outcome, message in _cases(junit)
        ],
    }


def _markdown(junit: Path, result: AssignmentResult) -> str:
    verdict = "passed" if result.success else "FAILED"
    lines = [f"# Assignment suite — {verdict}", "", f"{result.line()} in {result.seconds:.1f} s.", "",
             "| test | outcome | message |", "|---|---|---|"]  # fmt: skip
    for name, outcome, message in _cases(junit):
        lines.append(f"| `{name}` | {outcome} | {message.replace('|', '/')} |")
    return "\n".join(lines) + "\n"

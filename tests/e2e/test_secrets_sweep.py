"""No secret in any artifact, task log or XCom. Every connection of the end-to-end stack carries
a sentinel password (tests/e2e/conftest.py), and the scenarios before this module (it runs
last: pytest takes the modules in name order) made each step that can fail fail at least once:
this looks for the sentinel everywhere the runs left something a reader of runs can see."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.e2e.conftest import SENTINEL_PASSWORD

pytestmark = pytest.mark.slow

# The steps whose failures print the most (connections, tracebacks, tools' own output).
MUST_HAVE_FAILED = {
    "preflight", "apply_production", "validate_staging", "run_assignment_tests",
    "check_window_and_budget", "approve_production", "monitor_production_perf",
    "rollback_staging", "report",
}  # fmt: skip


def test_the_sentinel_password_is_nowhere_a_reader_of_runs_looks(airflow):
    failed: set[str] = set()
    for run in airflow.request(
        "GET", "/api/v2/dags/migration_rollout/dagRuns", params={"limit": 500}
    ).json()["dag_runs"]:
        run_id = run["dag_run_id"]
        for task in airflow.request(
            "GET", f"/api/v2/dags/migration_rollout/dagRuns/{run_id}/taskInstances"
        ).json()["task_instances"]:
            if task["state"] == "failed":
                failed.add(task["task_id"])
    missing = MUST_HAVE_FAILED - failed
    assert not missing, f"run the whole e2e suite first: these steps never failed: {missing}"

    leaks = [str(p) for p in _files(airflow) if SENTINEL_PASSWORD.encode() in p.read_bytes()]
    assert not leaks, f"the sentinel password is in {leaks[:10]}"
    # Every XCom every task returned, straight from Airflow's metadata database.
    with sqlite3.connect(airflow.home / "airflow.db") as db:
        values = [str(row[0]) for row in db.execute("SELECT value FROM xcom")]
    assert len(values) > 50
    assert not [v for v in values if SENTINEL_PASSWORD in v], "a step returned a password"


def _files(airflow) -> list[Path]:
    """Every artifact of every run and every task log (the component logs hold the
    scheduler's copies of them too)."""
    roots = [
        Path(airflow.extra_env["ROLLOUT_ARTIFACTS_URL"].removeprefix("file://")),
        airflow.home / "logs",
        airflow.home / "component-logs",
    ]
    files = [p for root in roots for p in root.rglob("*") if p.is_file()]
    assert len(files) > 100, "nothing to look at: did the stack run?"
    return files

"""The assignment suite pointed at a database, as the DAG points it at staging: it reports
through JUnit XML and Markdown, and leaves every other tenant's rows exactly as they were."""

from __future__ import annotations

import datetime as dt
import json

from rollout import db
from rollout.assignment import run_assignment_suite
from rollout.checksums import table_checksums
from rollout.migrations import apply_up, load_bundle
from rollout.seed import SEED_TABLES, seed_database

TABLES = (*SEED_TABLES, "booking_confirmation_results")


def test_suite_passes_on_a_migrated_target_and_touches_no_other_tenant(make_database, tmp_path):
    dsn = make_database()
    with db.connect(dsn) as conn:
        seed_database(conn, 2000, seed=21, anchor=dt.date(2026, 12, 1))
        apply_up(conn, load_bundle())
        before = table_checksums(conn, TABLES)

    result = run_assignment_suite(dsn, tmp_path)

    assert result.success, result.failures
    assert result.passed >= 12 and result.failed == result.errors == 0
    with db.connect(dsn) as conn:
        assert table_checksums(conn, TABLES) == before
    junit = (tmp_path / "assignment-junit.xml").read_text()
    assert 'name="test_concurrent_confirms_of_one_hold_yield_one_assignment[same-key]"' in junit
    report = (tmp_path / "assignment-report.md").read_text()
    assert report.startswith("# Assignment suite — passed")
    assert "| `test_rls::test_anon_gets_nothing` | passed |" in report
    facts = json.loads((tmp_path / "assignment-report.json").read_text())
    assert (facts["passed"], facts["failed"], facts["errors"]) == (result.passed, 0, 0)
    assert {"name": "test_rls::test_anon_gets_nothing", "outcome": "passed", "message": ""} in (
        facts["tests"]
    )


def test_suite_fails_on_a_target_without_the_migration(fresh_db, tmp_path):
    with db.connect(fresh_db) as conn:
        before = table_checksums(conn, SEED_TABLES)
    result = run_assignment_suite(fresh_db, tmp_path)
    assert not result.success
    assert any(
        "test_replay_returns_the_first_result_and_writes_nothing" in f for f in result.failures
    )
    assert "FAILED" in (tmp_path / "assignment-report.md").read_text()
    facts = json.loads((tmp_path / "assignment-report.json").read_text())
    failing = [t for t in facts["tests"] if t["outcome"] in ("failed", "error")]
    assert facts["success"] is False and len(failing) == facts["failed"] + facts["errors"] > 0
    assert all(t["message"] for t in failing)  # each failure says why
    with db.connect(fresh_db) as conn:
        assert table_checksums(conn, SEED_TABLES) == before

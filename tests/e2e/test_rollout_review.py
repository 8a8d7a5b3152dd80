"""The review page as a reviewer reads it (issue 17): headless Chromium, logged in as the
reviewer, opens the page of a succeeded run, a rejected one, one rolled back after production's
validation failed, and a fleet run, and finds on each what a reviewer must see. Every request
the pages make is watched: none may leave 127.0.0.1, none may break the page's own
Content-Security-Policy. Screenshots: .rollout/test-artifacts/browser/review-*.png.

The runs are those the scenarios before this module made this session (`finished_runs`: this
module comes after them in name order); run on its own, it makes each on targets of its own."""

from __future__ import annotations

import json

import pytest

from rollout.airflow_paths import run_page_path
from rollout.airflow_stack import APPROVER
from tests.e2e.browser import log_in, open_browser, shot
from tests.e2e.test_fleet_dag import break_target, fleet_conf, run_fleet_with_id
from tests.e2e.test_rollout_dag import (
    artifacts,
    conf,
    explain,
    make_run_failing_production_validation,
    run,
)

pytestmark = pytest.mark.slow

OUTBOX = "outbox event types are ones the consumers know"


@pytest.fixture(scope="module")
def reviewer(airflow):
    with open_browser() as (page, watch):
        log_in(airflow, page, APPROVER)
        yield page, watch


def finished(kind: str, finished_runs: dict[str, str], make) -> str:
    """The run of this kind a scenario made this session, or one made now."""
    if kind not in finished_runs:
        finished_runs[kind] = make()
    return finished_runs[kind]


def open_review(airflow, reviewer, dag_id: str, run_id: str, name: str, path: str = ""):
    """The run's review page (or one of its target pages) as the browser shows it; nothing it
    asked for left 127.0.0.1, nothing broke its policy; a screenshot kept."""
    page, watch = reviewer
    page.goto(airflow.url + run_page_path(dag_id, run_id) + path)
    page.locator("#verdict h2").wait_for()
    page.wait_for_load_state("load")
    shot(page, f"review-{name}")
    assert watch.outside == [], f"requests that left 127.0.0.1: {watch.outside}"
    assert watch.violations == [], watch.violations
    return page


def image_shown(page, selector: str) -> bool:
    """The image was fetched and decoded (not a broken-image box)."""
    return page.locator(selector).first.evaluate("img => img.complete && img.naturalWidth > 0")


def test_a_succeeded_run(airflow, reviewer, finished_runs):
    def make() -> str:
        run_id, state, states = run(airflow, conf("review_ok"))
        assert state == "success", explain(airflow, run_id, states)
        return run_id

    run_id = finished("succeeded", finished_runs, make)
    page = open_review(airflow, reviewer, "migration_rollout", run_id, "succeeded")
    assert page.locator("#verdict h2").inner_text() == "Succeeded"
    verdict = page.locator("#verdict").inner_text()
    assert (
        "staging: applied by this run" in verdict and "production: applied by this run" in verdict
    )
    diff = page.locator("#step-capture_db_diff")
    assert diff.locator(".diff-change .count").all_inner_texts() == [
        "23 added", "4 removed", "1 changed",
    ]  # fmt: skip
    assert "no differences" in diff.locator(".diff-drift").inner_text()
    assert "20 passed, 0 failed" in page.locator("#step-run_assignment_tests").inner_text()
    monitor = page.locator("#step-monitor_production_perf")
    assert image_shown(monitor, "img")  # the plot, inline
    assert "Plans that changed" in monitor.inner_text()
    assert "Lock held" in page.locator("#step-apply_production").inner_text()
    approval = page.locator("#approval").inner_text()
    assert f"By\n{APPROVER}" in approval or f"By {APPROVER}" in approval
    ledgers = page.locator("#ledgers").inner_text()
    assert "applied by this run" in ledgers


def test_a_rejected_run(airflow, reviewer, finished_runs):
    def make() -> str:
        run_id, state, states = run(airflow, conf("review_reject"), approve="Reject")
        assert state == "failed" and states["approve_production"] == "failed"
        return run_id

    run_id = finished("rejected", finished_runs, make)
    page = open_review(airflow, reviewer, "migration_rollout", run_id, "rejected")
    assert page.locator("#verdict h2").inner_text() == "Rejected"
    assert f"Reject by {APPROVER} at " in page.locator("#verdict").inner_text()
    gate = page.locator("#step-approve_production").inner_text()
    assert "Reject" in gate and APPROVER in gate
    rollback = page.locator("#step-rollback_staging").inner_text()
    assert "rolled_back" in rollback and "no differences" in rollback
    assert page.locator("#step-apply_production .state").inner_text() in (
        "upstream_failed",
        "skipped",
    )


def test_a_run_rolled_back_after_production_validation_failed(
    airflow, reviewer, finished_runs, e2e_targets
):
    def make() -> str:
        return make_run_failing_production_validation(airflow, "review_rollback")

    run_id = finished("rolled back", finished_runs, make)
    page = open_review(airflow, reviewer, "migration_rollout", run_id, "rolled-back")
    assert page.locator("#verdict h2").inner_text() == "Rolled back in production"
    assert OUTBOX in page.locator("#verdict").inner_text()
    validation = page.locator("#step-validate_production")
    first = validation.locator("table.expectations tbody tr").first
    assert first.locator("td").first.inner_text() == "FAILED"  # failures first
    assert OUTBOX in first.inner_text() and "capacity.unknown" in first.inner_text()
    assert "event_type in {" in first.inner_text()  # what it expected, beside what it found
    rollback = page.locator("#step-rollback_production").inner_text()
    assert "rolled_back" in rollback and "no differences" in rollback
    ledger = page.locator("#ledgers").inner_text()
    assert "rolled back by this run" in ledger


def test_a_fleet_run(airflow, reviewer, finished_runs, fleet_targets):
    def make() -> str:
        break_target(fleet_targets["fleet_review"]["f_fleet_review_1"])
        state, _report, run_id = run_fleet_with_id(airflow, fleet_conf("fleet_review"))
        assert state == "failed"
        return run_id

    run_id = finished("fleet", finished_runs, make)
    report = json.loads(
        (artifacts(airflow, run_id, "fleet_rollout") / "fleet-report.json").read_text()
    )
    page = open_review(airflow, reviewer, "fleet_rollout", run_id, "fleet")
    assert page.locator("#verdict h2").inner_text().startswith("Failed: ")
    rows = page.locator("table.targets tbody tr")
    assert rows.count() == len(report["targets"])
    for i, target in enumerate(report["targets"]):
        cells = rows.nth(i).locator("td").all_inner_texts()
        assert cells[0] == target["conn_id"] and cells[1].startswith(str(target["wave"]))
        assert cells[2] == target["state"] and cells[3] == target["why"]
    refused = next(t for t in report["targets"] if t["state"] == "refused")
    assert "ON CONFLICT" in refused["why"]
    canary = report["targets"][0]
    assert canary["state"] == "applied"
    # Each row links to that target's own evidence.
    page.get_by_role("link", name=canary["conn_id"], exact=True).click()
    page.locator("#verdict h2").wait_for()
    shot(page, "review-fleet-canary")
    assert page.locator("#verdict h2").inner_text() == "Applied"
    assert "Passed: " in page.locator("#step-validate").inner_text()
    assert image_shown(page.locator("#step-monitor"), "img")
    assert "applied by this run" in page.locator("#ledgers").inner_text()
    page = open_review(airflow, reviewer, "fleet_rollout", run_id, "fleet-refused",
                       f"targets/{refused['conn_id']}/")  # fmt: skip
    assert "ON CONFLICT" in page.locator("#step-preflight .failure").inner_text()
    _, watch = reviewer
    assert watch.outside == [] and watch.violations == []

"""The approval as a person gives it: headless Chromium (Debian's package, driven by
Playwright; no downloaded browser) logs in, triggers the DAG through its trigger form, opens
the pending approval, reads it, clicks Approve, watches the run succeed, and opens the run's
review page. Screenshots land in .rollout/test-artifacts/browser/; the review page's own
browser test (test_rollout_review.py) reads this run again as a reviewer would."""

from __future__ import annotations

import pytest

from rollout.airflow_stack import APPROVER
from tests.e2e.browser import log_in, shot, wait_for
from tests.e2e.conftest import VERSION

pytestmark = pytest.mark.slow


def test_a_person_approves_in_the_browser(airflow, browser_page, finished_runs):
    """The admin triggers, naming the reviewer as approver; the reviewer approves (four eyes:
    the admin is not offered the gate)."""
    page = browser_page
    log_in(airflow, page, "admin")

    # Trigger through the DAG's own form, pointing it at this test's targets.
    page.goto(f"{airflow.url}/dags/migration_rollout")
    page.get_by_role("button", name="Trigger").first.click()
    page.locator("[name=element_staging_conn_id]").fill("s_browser")
    page.locator("[name=element_production_conn_id]").fill("p_browser")
    page.locator("[name=element_monitor_period_s]").fill("0")
    page.locator("[name=element_approvers]").fill(APPROVER)
    page.locator("[name=element_version]").fill(VERSION)
    shot(page, "1-trigger-form")
    known = {r["dag_run_id"] for r in runs(airflow)}
    page.get_by_role("button", name="Trigger").last.click()
    run = wait_for(lambda: next((r for r in runs(airflow) if r["dag_run_id"] not in known), None),
                   60, "the triggered run")  # fmt: skip
    run_id = run["dag_run_id"]
    assert run["conf"]["staging_conn_id"] == "s_browser"
    assert run["conf"]["approvers"] == [APPROVER]

    airflow.wait_for_task(run_id, "approve_production", ("awaiting_input",))
    # Clicked once the gate is parked as far as the scheduler knows (AirflowStack.gate_settled).
    airflow.wait_until(lambda: airflow.gate_settled(run_id), 120, "the gate to be parked")
    log_in(airflow, page, APPROVER)
    page.goto(airflow.required_actions_url(run_id))
    page.get_by_text(
        "Apply 20251113203000_capacity_overlap_and_confirm_cache to production?"
    ).first.wait_for()
    body = page.locator("body").inner_text()
    assert "predicted lock on public.allocations" in body and "Maintenance window" in body
    assert f"Who may answer: {APPROVER}" in body
    shot(page, "2-approval")
    page.get_by_role("button", name="Approve").first.click()

    wait_for(lambda: airflow.run_state(run_id) in ("success", "failed"), 600, "the run to end")
    assert airflow.run_state(run_id) == "success", airflow.task_states(run_id)
    page.goto(f"{airflow.url}/dags/migration_rollout/runs/{run_id}")
    page.wait_for_timeout(2000)
    shot(page, "3-run-succeeded")
    details = airflow.request(
        "GET", f"/api/v2/dags/migration_rollout/dagRuns/{run_id}/hitlDetails"
    ).json()["hitl_details"][0]
    assert details["chosen_options"] == ["Approve"]
    assert details["responded_by_user"]["name"] == APPROVER

    # The review page where a reviewer finds it: the run's "Rollout artifacts" tab (Airflow's
    # UI frames the plugin's page); test_rollout_review.py reads it in full.
    finished_runs["succeeded"] = run_id
    page.goto(f"{airflow.url}/dags/migration_rollout/runs/{run_id}/plugin/rollout_artifacts")
    verdict = page.frame_locator("iframe").first.locator("#verdict h2")
    assert verdict.inner_text() == "Succeeded"
    shot(page, "4-review-in-its-tab")


def runs(airflow) -> list[dict]:
    response = airflow.request("GET", "/api/v2/dags/migration_rollout/dagRuns?limit=100")
    return response.json()["dag_runs"]

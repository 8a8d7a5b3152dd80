"""The approval as a person gives it: headless Chromium (Debian's package, driven by
Playwright; no downloaded browser) logs in, triggers the DAG through its trigger form, opens
the pending approval, reads it, clicks Approve, watches the run succeed, and opens the run's
artifact page. Screenshots land in .rollout/test-artifacts/browser/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from rollout.airflow_stack import APPROVER
from rollout.paths import STATE_DIR
from tests.e2e.conftest import VERSION

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOTS = STATE_DIR / "test-artifacts" / "browser"


@pytest.fixture
def browser_page():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(
            "browser test: no Chromium (Debian package `chromium`; `make test` installs it as root)"
        )
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def wait_for(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def log_in(airflow, page, user: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{airflow.url}/auth/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", airflow.password_of(user))
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/auth/login" not in url)


def test_a_person_approves_in_the_browser(airflow, browser_page):
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

    # The artifacts, through the plugin page, on the browser's own login.
    page.goto(f"{airflow.url}/rollout/runs/migration_rollout/{run_id}/")
    assert "succeeded" in page.locator("pre").first.inner_text()
    assert "s_browser" in page.locator("body").inner_text()  # the ledgers, read-only
    shot(page, "4-artifacts")
    page.get_by_role("link", name="db-diff.txt", exact=True).click()
    assert "objects: 23 added, 4 removed, 1 changed" in page.locator("body").inner_text()
    page.go_back()
    page.get_by_role("link", name="staging/validation/data-docs/index.html").click()
    page.wait_for_load_state()
    assert "post_migration" in page.content()
    shot(page, "5-data-docs")


def runs(airflow) -> list[dict]:
    response = airflow.request("GET", "/api/v2/dags/migration_rollout/dagRuns?limit=100")
    return response.json()["dag_runs"]

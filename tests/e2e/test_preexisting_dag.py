"""Issue 23 (7) through a real Airflow: production already holds data its checks reject (an
outbox event type no consumer knows, written before the run) while the application writes
throughout. The approver is told before approving; the correct migration is applied and kept."""

from __future__ import annotations

import html
import json
import re

import pytest

from rollout import db
from rollout.workload import LiveApplication
from tests.e2e.test_rollout_dag import artifacts, conf, explain, run
from tests.target_state import migrated, outcomes

pytestmark = pytest.mark.slow

OUTBOX = "outbox event types are ones the consumers know"
UNKNOWN = "capacity.legacy_export"  # what an old producer once wrote


def test_a_preexisting_violation_is_shown_at_the_gate_and_never_rolls_production_back(
    airflow, e2e_targets
):
    targets = e2e_targets["preexisting"]
    with db.connect(targets["production"]) as conn:
        conn.execute("INSERT INTO capacity_outbox (event_type) VALUES (%s)", (UNKNOWN,))
    with LiveApplication(targets["production"]) as app:
        run_id, state, states = run(airflow, conf("preexisting"))
    assert app.committed() > 20 and not app.bookings.stats.errors and not app.outbox.errors
    assert state == "success", explain(airflow, run_id, states)
    assert states["validate_production"] == "success"
    assert states["rollback_production"] == "skipped"
    assert migrated(targets["production"]) and outcomes(targets["production"]) == ["applied"]

    # The gate's body, as Airflow holds it: what production already violates, before approving.
    [gate] = airflow.request(
        "GET", f"/api/v2/dags/migration_rollout/dagRuns/{run_id}/hitlDetails"
    ).json()["hitl_details"]
    assert "Production already violates 1 expectation(s)" in gate["body"]
    assert f"capacity_outbox: {OUTBOX}: 1 row(s) ({UNKNOWN})" in gate["body"]

    # After the apply: reported as pre-existing, not failed.
    folder = artifacts(airflow, run_id) / "production"
    report = json.loads((folder / "validation/validation-report.json").read_text())
    assert report["success"] and report["failures"] == []
    assert report["preexisting"] == [
        f"capacity_outbox: {OUTBOX} (1 unexpected, 1 before the apply: pre-existing)"
    ]
    [outbox] = [j for j in report["judged"] if j["table"] == "capacity_outbox"]
    assert (outbox["at_gate"], outbox["before"], outbox["after"]) == (1, 1, 1)

    # The review page says so at the gate's check and at production's validation.
    page = airflow.request("GET", f"/rollout/runs/migration_rollout/{run_id}/")
    assert page.status_code == 200 and "<h2>Succeeded</h2>" in page.text
    text = html.unescape(re.sub(r"<[^>]+>", "", page.text))
    assert "What production already violates, shown to the approver" in text
    assert "Production already violates 1 expectation(s) before the migration" in text
    assert "1 pre-existing and no worse" in text and UNKNOWN in text
    assert "1 violation(s) already there before the apply, no worse after" in text

"""Production judged by what the migration changed (issue 23, 7): data that was already wrong
before the run is shown before the approval and does not fail the check after a correct apply;
a migration that makes it worse does. Real PostgreSQL, the application writing meanwhile, no
Airflow."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from rollout import db, report, steps
from rollout.migrations import MigrationBundle, load_bundle
from rollout.workload import LiveApplication
from tests.target_state import ledger_rows, make_run, migrated

VERSION = "20251113203000"
UNKNOWN = "capacity.hold.teleported"  # an event type no consumer knows
OUTBOX_CHECK = "capacity_outbox: outbox event types are ones the consumers know"


def write_unknown_outbox_event(dsn: str) -> None:
    with db.connect(dsn) as conn:
        conn.execute("INSERT INTO capacity_outbox (event_type) VALUES (%s)", (UNKNOWN,))


def test_a_preexisting_violation_is_shown_before_approval_and_does_not_fail_a_correct_apply(
    targets, tmp_path
):
    production = targets["production"]
    write_unknown_outbox_event(production)  # written before the run
    run, said = make_run(targets, tmp_path)
    steps.preflight(run)

    at_gate = steps.check_production_data(run, "approval")
    assert at_gate["violations"] == [f"{OUTBOX_CHECK}: 1 row(s) ({UNKNOWN})"]
    assert at_gate["absent_tables"] == ["booking_confirmation_results"]  # the migration makes it
    gate_text = "\n".join(report.already_violated_lines({"production_data": at_gate}))
    assert "Production already violates 1 expectation(s)" in gate_text and UNKNOWN in gate_text

    with LiveApplication(production) as app:  # the application writes through it all
        time.sleep(1)
        steps.check_production_data(run, "apply")
        steps.apply_target(run, "production")
        time.sleep(1)
        checked = steps.validate(run, "production")
    assert app.committed() > 10 and not app.bookings.stats.errors and not app.outbox.errors

    assert checked["success"] and checked["failures"] == []
    assert checked["preexisting"] == [
        f"{OUTBOX_CHECK} (1 unexpected, 1 before the apply: pre-existing)"
    ]
    assert migrated(production) and [r["outcome"] for r in ledger_rows(production)] == ["applied"]
    saved = json.loads(
        (tmp_path / "run_a/production/validation/validation-report.json").read_text()
    )
    [outbox] = [j for j in saved["judged"] if j["table"] == "capacity_outbox"]
    assert (outbox["verdict"], outbox["at_gate"], outbox["before"], outbox["after"]) == (
        "pre-existing", 1, 1, 1,
    )  # fmt: skip
    # The new table was not there before: judged as it is, and it holds.
    assert {j["verdict"] for j in saved["judged"] if j["table"] != "capacity_outbox"} == {"ok"}
    markdown = (tmp_path / "run_a/production/validation/validation-report.md").read_text()
    assert "— passed" in markdown and "pre-existing" in markdown
    assert any("pre-existing, not the migration's" in line for line in said)


def bundle_writing_unknown_events(tmp_path) -> MigrationBundle:
    """The real bundle, as another version whose up also writes an event nobody consumes (and
    whose manifest allows the insert, so only the validation can catch it)."""
    source = load_bundle(VERSION)
    version = "20251113203002"
    folder = tmp_path / "bundles" / f"{version}_{source.name}"
    shutil.copytree(source.path, folder)
    up = folder / "up.sql"
    marker = "CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;"
    up.write_text(
        up.read_text().replace(
            marker,
            f"{marker}\nINSERT INTO public.capacity_outbox (event_type) VALUES ('{UNKNOWN}');",
        )
    )
    manifest = folder / "manifest.toml"
    manifest.write_text(
        f'expectations = "{VERSION}"\n'  # the real bundle's suites
        + manifest.read_text().replace(
            "may_insert = []", 'may_insert = ["public.capacity_outbox"]', 1
        )
    )
    return MigrationBundle(version, source.name, folder)


@pytest.mark.parametrize(
    ("already_there", "verdict", "said"),
    [(0, "new", "passed before the apply"), (1, "worse", "1 before the apply: new since")],
    ids=["new", "worse"],
)
def test_a_migration_that_writes_a_violation_fails(targets, tmp_path, already_there, verdict, said):
    """Its own unknown event: a new violation where production had none, or one more where it
    had one already; either fails the check after the apply, naming it."""
    production = targets["production"]
    for _ in range(already_there):
        write_unknown_outbox_event(production)
    run, _ = make_run(targets, tmp_path, bundle=bundle_writing_unknown_events(tmp_path))
    steps.preflight(run)
    steps.check_production_data(run, "apply")
    steps.apply_target(run, "production")
    with pytest.raises(steps.StepFailed, match=said):
        steps.validate(run, "production")
    saved = json.loads(
        (tmp_path / "run_a/production/validation/validation-report.json").read_text()
    )
    [outbox] = [j for j in saved["judged"] if j["table"] == "capacity_outbox"]
    assert (outbox["verdict"], outbox["before"], outbox["after"]) == (
        verdict, already_there, already_there + 1,
    )  # fmt: skip
    assert saved["success"] is False and saved["preexisting"] == []


def test_without_a_before_production_is_judged_as_it_is(targets, tmp_path):
    """A run that took no "before" (an older DAG, a step run by hand) keeps the absolute check:
    the violation fails it, saying which expectation."""
    production = targets["production"]
    write_unknown_outbox_event(production)
    run, _ = make_run(targets, tmp_path)
    steps.preflight(run)
    steps.apply_target(run, "production")
    with pytest.raises(steps.StepFailed, match="outbox event types are ones the consumers know"):
        steps.validate(run, "production")


def test_a_fleet_target_is_judged_against_itself_before_its_apply(targets, tmp_path):
    """A fleet's target runs its whole story in one step (fleet_steps.roll_out_target): its
    "before" is taken at its preflight, beside its performance baseline, and its validation is
    judged against it: a violation it already had is reported, nothing rolled back."""
    from rollout.fleet_steps import roll_out_target, target_run

    production = targets["production"]
    write_unknown_outbox_event(production)
    run, _ = make_run(targets, tmp_path, monitor_period_s=0)
    steps.preflight_target(run, "staging")
    target = target_run(run, "p_eu_1", production)
    results = roll_out_target(target, data_docs=False)
    assert results["preflight"]["data_before"]["violations"] == [
        f"{OUTBOX_CHECK}: 1 row(s) ({UNKNOWN})"
    ]
    assert results["validate"]["success"]
    assert results["validate"]["preexisting"] == [
        f"{OUTBOX_CHECK} (1 unexpected, 1 before the apply: pre-existing)"
    ]
    assert "rollback" not in json.loads((tmp_path / "run_a/targets/p_eu_1/steps.json").read_text())
    assert migrated(production) and [r["outcome"] for r in ledger_rows(production)] == ["applied"]

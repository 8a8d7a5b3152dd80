"""What exactly is approved: the bundle as preflight read it. An edit to the bundle folder after
preflight (while the gate or the window waits) refuses every later step that would touch a
target with it, naming both checksums; staging and production run the run's own copy."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from rollout import db, steps
from rollout.bundle_snapshot import BundleChanged
from rollout.fleet import FleetSettings
from rollout.fleet_steps import preflight_fleet, roll_out_target, target_run
from rollout.migrations import MigrationBundle, load_bundle
from rollout.report import NOTHING_TO_DO, run_outcome
from rollout.schema import snapshot_schema
from tests.target_state import bookings_columns, ledger_rows, make_run, migrated

# The statement issue 23 saw appended to up.sql while wait_for_window waited.
EDIT = "ALTER TABLE public.bookings ADD COLUMN edited_after_approval int;\n"


def bundle_copy(tmp_path) -> MigrationBundle:
    real = load_bundle()
    folder = tmp_path / "bundles" / real.path.name
    shutil.copytree(real.path, folder)
    return MigrationBundle(real.version, real.name, folder)


def append_statement(bundle: MigrationBundle) -> None:
    """One statement more in up.sql, inside its transaction (before its COMMIT)."""
    up = bundle.up_path.read_text()
    head, _, tail = up.rpartition("COMMIT;")
    bundle.up_path.write_text(f"{head}{EDIT}COMMIT;{tail}")


def has_edit_column(dsn: str) -> bool:
    return bool(bookings_columns(dsn, "edited_after_approval"))


def test_an_edit_after_preflight_refuses_production_and_touches_nothing(targets, tmp_path):
    on_disk = bundle_copy(tmp_path)
    run, _ = make_run(targets, tmp_path, "run_edited", bundle=on_disk)
    steps.preflight(run)
    approved = on_disk.checksum
    # The run works from its own copy, in its artifacts, from preflight on.
    assert run.bundle.path == tmp_path / "run_edited" / "bundle" / on_disk.path.name
    assert run.bundle.checksum == approved
    steps.apply_target(run, "staging")

    append_statement(on_disk)  # while the gate or the window waits
    edited = MigrationBundle(on_disk.version, on_disk.name, on_disk.path).checksum
    assert edited != approved
    before = snapshot_schema_of(targets["production"])
    with pytest.raises(BundleChanged) as refused:
        steps.apply_target(run, "production")
    message = str(refused.value)
    assert edited[:12] in message and approved[:12] in message
    assert "Nothing was touched" in message and "Trigger a new run" in message
    assert ledger_rows(targets["production"]) == []
    assert snapshot_schema_of(targets["production"]) == before
    assert not migrated(targets["production"]) and not has_edit_column(targets["production"])
    mismatch = json.loads((tmp_path / "run_edited" / "bundle-mismatch.json").read_text())
    assert (mismatch["approved"], mismatch["on_disk"]) == (approved, edited)
    assert mismatch["step"] == "apply production"

    # Staging ran the copy: its ledger row has the approved checksum and no edit is there.
    [row] = ledger_rows(targets["staging"])
    assert row["checksum"] == approved and not has_edit_column(targets["staging"])
    # A rollback runs the down that was applied, whatever the folder says now.
    assert steps.rollback_target(run, "staging")["action"] == "rolled_back"
    assert not migrated(targets["staging"])


def test_production_applies_the_copy_staging_ran(targets, tmp_path):
    on_disk = bundle_copy(tmp_path)
    run, _ = make_run(targets, tmp_path, "run_copy", bundle=on_disk)
    steps.preflight(run)
    approved = run.bundle.checksum
    steps.apply_target(run, "staging")
    append_statement(on_disk)
    with pytest.raises(BundleChanged):
        steps.validate(run, "staging", data_docs=False)
    # Restored as it was: the run goes on with the bytes it read at preflight.
    shutil.copyfile(run.bundle.up_path, on_disk.up_path)
    steps.apply_target(run, "production")
    for dsn in targets.values():
        [row] = ledger_rows(dsn)
        assert (row["outcome"], row["checksum"]) == ("applied", approved)
        assert migrated(dsn) and not has_edit_column(dsn)


def test_a_fleet_target_refuses_a_bundle_edited_after_preflight(targets, tmp_path):
    on_disk = bundle_copy(tmp_path)
    fleet = FleetSettings.from_params(
        {"production_targets": ["prod_a"], "staging_conn_id": "rollout_staging",
         "approvers": ["reviewer"]},
        groups={}, known=["prod_a", "rollout_staging"],
    )  # fmt: skip
    run, _ = make_run(targets, tmp_path, "run_fleet")
    run.settings = dataclasses.replace(fleet.rollout, bundle=on_disk)
    preflight_fleet(run, fleet, {"prod_a": targets["production"]})
    steps.apply_target(run, "staging")
    append_statement(on_disk)  # while a later wave waits

    target = target_run(run, "prod_a", targets["production"])
    with pytest.raises(BundleChanged, match="preflight production refused"):
        roll_out_target(target)
    edited = MigrationBundle(on_disk.version, on_disk.name, on_disk.path).checksum
    failure = (tmp_path / "run_fleet/targets/prod_a/failures/preflight.txt").read_text()
    assert run.bundle.checksum[:12] in failure and edited[:12] in failure
    with pytest.raises(BundleChanged, match="apply production refused"):
        steps.apply_target(target, "production")
    assert ledger_rows(targets["production"]) == []
    assert not migrated(targets["production"]) and not has_edit_column(targets["production"])


def snapshot_schema_of(dsn: str):
    with db.connect(dsn) as conn:
        return snapshot_schema(conn)


def test_a_version_applied_everywhere_is_nothing_to_do_at_preflight(targets, tmp_path):
    first, _ = make_run(targets, tmp_path, "run_first")
    steps.preflight(first)
    assert "nothing_to_do" not in steps.preflight(first)
    for target in ("staging", "production"):
        steps.apply_target(first, target)
    steps.release_leases(first)  # its report's last act

    second, _ = make_run(targets, tmp_path, "run_second")
    checked = steps.preflight(second)
    assert "is applied on every target already" in checked["nothing_to_do"]
    assert "staging: 20251113203000 applied at" in checked["nothing_to_do"]
    assert "by run run_first" in checked["nothing_to_do"]
    assert "nobody is asked to approve" in checked["nothing_to_do"]
    assert run_outcome({"preflight": "skipped", "approve_production": "skipped"}) == NOTHING_TO_DO
    assert [r["run_id"] for r in ledger_rows(targets["production"])] == ["run_first"]

"""The rollout's steps on real PostgreSQL, without Airflow: the ledger and its guards, the apply
under lock contention, rollback and its refusal, the compatibility scan."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from rollout import db, ledger, steps
from rollout.errors import RollbackRefused, TargetUnavailable
from rollout.migrations import MigrationBundle, run_check
from rollout.seed import table_row_counts
from tests.target_state import ledger_rows, make_run, migrated

VERSION = "20251113203000"


def test_apply_writes_the_ledger_and_a_rerun_is_a_no_op(targets, tmp_path):
    run, said = make_run(targets, tmp_path, "test_run", folder="artifacts")
    first = steps.preflight(run)
    assert first["staging"]["applied"] is False and first["production"]["locked_rows"] > 0
    assert (tmp_path / "artifacts/staging/before/schema.json").is_file()
    # Squawk's findings on the bytes this run applies, kept for the gate and the review.
    assert first["lint"] == {"answered": 6, "accepted": 2, "warning": 0}
    lint = json.loads((tmp_path / "artifacts/lint.json").read_text())
    assert len(lint["findings"]) == 8
    assert [f["rule"] for f in lint["findings"] if f["status"] == "warning"] == []

    applied = steps.apply_target(run, "staging")
    assert applied["noop"] is False and applied["lock_seconds"] > 0 and applied["attempts"] == 1
    [row] = ledger_rows(targets["staging"])
    assert (row["version"], row["direction"], row["outcome"]) == (VERSION, "up", "applied")
    assert row["checksum"] == run.bundle.checksum and row["run_id"] == "test_run"
    # The ledger's lock time is taken inside the transaction, before its own COMMIT; the
    # step's after it: the same lock, the ledger's never the longer.
    assert row["actor"] == "tester" and 0 < row["lock_s"] <= applied["lock_seconds"] + 0.001

    again = steps.apply_target(run, "staging")
    assert again["noop"] is True and "applied at" in again["state"]
    assert any("nothing to do" in line for line in said)
    assert len(ledger_rows(targets["staging"])) == 1
    assert steps.preflight(run)["staging"]["applied"] is True
    assert not migrated(targets["production"])


def test_an_edited_bundle_fails_preflight_and_changes_nothing(targets, tmp_path):
    run, _ = make_run(targets, tmp_path, "test_run", folder="artifacts")
    steps.apply_target(run, "staging")
    edited_dir = tmp_path / run.bundle.path.name
    shutil.copytree(run.bundle.path, edited_dir)
    with (edited_dir / "up.sql").open("a") as up:
        up.write("-- an innocent-looking edit\n")
    edited = MigrationBundle(run.bundle.version, run.bundle.name, edited_dir)
    run.settings = dataclasses.replace(run.settings, bundle=edited)

    with pytest.raises(ledger.ChecksumMismatch, match="must not be edited"):
        steps.preflight(run)
    with pytest.raises(ledger.ChecksumMismatch):
        steps.apply_target(run, "staging")
    assert len(ledger_rows(targets["staging"])) == 1
    assert not migrated(targets["production"])


def test_lock_contention_beyond_the_retries_fails_cleanly(targets, tmp_path):
    run, said = make_run(
        targets, tmp_path, "test_run", folder="artifacts", lock_timeout_ms=100, lock_retries=2,
        retry_backoff_s=0.1,
    )  # fmt: skip
    with db.connect(targets["production"], autocommit=False) as holder:
        holder.execute("LOCK TABLE public.allocations IN ACCESS SHARE MODE")  # a long reader
        with pytest.raises(steps.StepFailed, match=r"not granted .* in 3 attempts"):
            steps.apply_target(run, "production")
        holder.rollback()
    assert sum("attempt" in line for line in said) >= 3
    assert not migrated(targets["production"])
    with db.connect(targets["production"]) as conn:
        run_check(conn, run.bundle, "verify_down")
    [row] = ledger_rows(targets["production"])
    assert row["outcome"] == "failed" and "3 attempts" in row["detail"]

    # The apply's transaction rolled back: the rollback notices and does nothing.
    assert steps.rollback_target(run, "production")["action"] == "not_needed"


def test_rollback_restores_the_before_schema_and_keeps_the_cache_rows(targets, tmp_path):
    run, _ = make_run(targets, tmp_path, "test_run", folder="artifacts")
    steps.preflight(run)
    steps.apply_target(run, "staging")
    counts = table_row_counts_of(targets["staging"])

    result = steps.rollback_target(run, "staging")
    assert result["action"] == "rolled_back"
    diff = (tmp_path / "artifacts/staging/rollback/db-diff-after-rollback.txt").read_text()
    assert "objects: no differences" in diff
    assert (tmp_path / "artifacts/staging/rollback/booking_confirmation_results.csv").is_file()
    assert not migrated(targets["staging"])
    assert table_row_counts_of(targets["staging"]) == counts
    assert [r["outcome"] for r in ledger_rows(targets["staging"])] == ["applied", "rolled_back"]


def test_a_rollback_blocked_by_data_reports_and_deletes_nothing(targets, tmp_path):
    run, _ = make_run(targets, tmp_path, "test_run", folder="artifacts")
    steps.preflight(run)
    steps.apply_target(run, "staging")
    with db.connect(targets["staging"]) as conn:
        # After the migration a hold may overlap a confirmed booking: legal now, fatal to down.
        conn.execute(
            'INSERT INTO allocations (restaurant_id, resource_type, resource_id, "window", shadow) '
            'SELECT restaurant_id, resource_type, resource_id, "window", true '
            "FROM allocations WHERE NOT shadow LIMIT 1"
        )
    counts = table_row_counts_of(targets["staging"])

    with pytest.raises(RollbackRefused, match=r"1 row\(s\) .* nothing was deleted"):
        steps.rollback_target(run, "staging")
    conflicts = json.loads(
        (tmp_path / "artifacts/staging/rollback/down-conflicts.json").read_text()
    )
    assert len(conflicts) == 1
    assert table_row_counts_of(targets["staging"]) == counts
    assert migrated(targets["staging"])
    assert [r["outcome"] for r in ledger_rows(targets["staging"])] == ["applied", "refused"]


def test_preflight_refuses_functions_that_use_the_constraint_as_an_arbiter(targets, tmp_path):
    with db.connect(targets["production"]) as conn:
        conn.execute(
            "CREATE FUNCTION public.upsert_allocation() RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
            'INSERT INTO allocations (restaurant_id, resource_type, resource_id, "window") '
            'SELECT restaurant_id, resource_type, resource_id, "window" FROM allocations LIMIT 1 '
            "ON CONFLICT ON CONSTRAINT allocations_no_overlap DO NOTHING; END $$"
        )
    run, _ = make_run(targets, tmp_path, "test_run", folder="artifacts")
    with pytest.raises(
        steps.StepFailed, match=r"upsert_allocation\(\): these functions use allocations_no_overlap"
    ):
        steps.preflight(run)


def test_two_rollouts_never_touch_one_database_at_once(targets, tmp_path):
    run, _ = make_run(targets, tmp_path, "test_run", folder="artifacts")
    with db.connect(targets["staging"], application_name="other-rollout") as other:
        ledger.take_rollout_lock(other, "staging")
        with pytest.raises(ledger.TargetBusy, match="other-rollout"):
            steps.apply_target(run, "staging")
    assert not migrated(targets["staging"])


def test_a_database_that_is_down_is_named(targets, tmp_path):
    dsns = {**targets, "production": "host=/nonexistent dbname=booking user=postgres"}
    run, _ = make_run(dsns, tmp_path, "test_run", folder="artifacts")
    with pytest.raises(TargetUnavailable, match="cannot connect"):
        steps.preflight(run)


def table_row_counts_of(dsn: str) -> dict[str, int]:
    with db.connect(dsn) as conn:
        return table_row_counts(conn)

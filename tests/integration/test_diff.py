"""db-diff: baseline -> up lists exactly the migration's changes; identical databases give an
empty diff; drift between two databases is reported; the report is stable."""

from __future__ import annotations

import json

from rollout import db
from rollout.diff import capture_db_diff, diff_snapshots, load_snapshot, save_snapshot
from rollout.migrations import apply_up, load_bundle
from rollout.schema import snapshot_schema

BUNDLE = load_bundle("20251113203000")
CACHE = "booking_confirmation_results"


def test_baseline_to_up_lists_exactly_the_migration(fresh_db, tmp_path):
    with db.connect(fresh_db) as conn:
        before = snapshot_schema(conn)
        save_snapshot(before, tmp_path, "before.json")
        apply_up(conn, BUNDLE)
        diff = capture_db_diff(
            load_snapshot(tmp_path / "before.json"), conn, tmp_path,
            before_label="staging before", after_label="staging after",
        )  # fmt: skip
    outside_cache = {key for key in diff.added if CACHE not in key[1]}
    assert outside_cache == {
        ("constraint", "public.allocations.allocations_no_overlap"),
        ("index", "public.allocations_no_overlap"),
    }
    assert {kind for kind, _ in diff.added} == {
        "column",
        "constraint",
        "grant",
        "index",
        "policy",
        "table",
    }
    confirm = "public.confirm_hold_assignment_tx(uuid,uuid,text,boolean,uuid,booking_status)"
    assert set(diff.removed) == {
        ("constraint", "public.allocations.allocations_resource_window_excl"),
        ("index", "public.allocations_resource_window_excl"),
        ("grant", f"{confirm} to PUBLIC"),  # the confirm is no RPC for the anon key
        ("grant", f"{confirm} to anon"),
    }
    assert set(diff.changed) == {
        (
            "function",
            "public.confirm_hold_assignment_tx(uuid,uuid,text,boolean,uuid,booking_status)",
        )
    }
    report = (tmp_path / "db-diff.txt").read_text()
    assert report.startswith("db-diff: staging before -> staging after\nobjects: ")
    assert f"objects: {len(diff.added)} added, 4 removed, 1 changed" in report
    assert f"- grant {confirm} to anon" in report
    assert "+ constraint public.allocations.allocations_no_overlap" in report
    assert "- index public.allocations_resource_window_excl" in report
    assert "allocations_resource_window_idx" not in report  # kept: no change to show
    assert "~ function public.confirm_hold_assignment_tx" in report
    added_lines = [line.strip() for line in report.splitlines() if line.strip().startswith("+")]
    assert "+        IF to_regclass('public.capacity_outbox') IS NOT NULL THEN" in added_lines
    # The same facts as JSON, for the review page: counts, each object, each change's diff.
    facts = json.loads((tmp_path / "db-diff.json").read_text())
    assert facts["counts"] == {"added": len(diff.added), "removed": 4, "changed": 1}
    assert {"kind": "index", "name": "public.allocations_resource_window_excl"}.items() <= (
        next(r for r in facts["removed"] if r["kind"] == "index").items()
    )
    [change] = facts["changed"]
    assert change["name"] == confirm and change["diff"][0] == "--- staging before"
    assert "+        IF to_regclass('public.capacity_outbox') IS NOT NULL THEN" in change["diff"]


def test_identical_databases_give_an_empty_diff_and_a_stable_report(make_database, tmp_path):
    first, second = make_database(), make_database()
    with db.connect(first) as a, db.connect(second) as b:
        diff = capture_db_diff(a, b, tmp_path, before_label="staging", after_label="production")
        report = (tmp_path / "db-diff.txt").read_text()
        again = capture_db_diff(
            a, b, tmp_path / "again", before_label="staging", after_label="production"
        )
    assert diff.is_empty and again.is_empty
    assert report == "db-diff: staging -> production\nobjects: no differences\n"
    assert (tmp_path / "again" / "db-diff.txt").read_text() == report


def test_drift_is_reported(make_database, tmp_path):
    staging, production = make_database(), make_database()
    with db.connect(production) as conn:
        conn.execute("CREATE INDEX bookings_status_idx ON bookings (status)")
        conn.execute("ALTER TABLE restaurants ADD COLUMN phone text")
        conn.execute("ALTER TABLE zones ALTER COLUMN name SET DEFAULT 'Main'")
    with db.connect(staging) as a, db.connect(production) as b:
        diff = diff_snapshots(snapshot_schema(a), snapshot_schema(b))
    assert set(diff.added) == {
        ("index", "public.bookings_status_idx"),
        ("column", "public.restaurants.phone"),
    }
    assert set(diff.changed) == {("column", "public.zones.name")}
    assert diff.removed == {}
    assert diff.summary() == "2 added, 0 removed, 1 changed"

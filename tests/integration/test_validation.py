"""The Great Expectations suites against real databases: they pass on good data, and name
each expectation that bad data breaks. Data Docs land in the artifacts folder."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from rollout import db
from rollout.catalog import run_catalog_checks
from rollout.errors import RolloutError
from rollout.migrations import apply_up, load_bundle
from rollout.seed import seed_database, table_row_counts
from rollout.validation import (
    EXPECTATIONS_DIR,
    connect_args,
    run_suite,
    sqlalchemy_url,
    suite_path,
    validate_target,
)

VERSION = "20251113203000"


@pytest.fixture(scope="module")
def seeded_dsn(make_database) -> str:
    dsn = make_database()
    with db.connect(dsn) as conn:
        seed_database(conn, 2000, seed=3, anchor=dt.date(2026, 12, 1))
    return dsn


def counts_before(dsn: str) -> dict[str, int]:
    with db.connect(dsn) as conn:
        return table_row_counts(conn)


def test_pre_then_post_migration_suites_pass_on_good_data(seeded_dsn, tmp_path):
    pre = run_suite(seeded_dsn, suite_path(VERSION, "pre_migration"), tmp_path / "pre")
    assert (pre.success, pre.failed) == (True, [])
    assert pre.evaluated == pre.successful == 8
    assert (tmp_path / "pre" / "data-docs" / "index.html").is_file()

    counts = counts_before(seeded_dsn)
    with db.connect(seeded_dsn) as conn:
        apply_up(conn, load_bundle(VERSION))
    post = run_suite(
        seeded_dsn, suite_path(VERSION, "post_migration"), tmp_path / "post", row_counts=counts
    )
    assert (post.success, post.failed) == (True, [])
    assert post.evaluated == 20
    summary = json.loads((tmp_path / "post" / "validation-post_migration.json").read_text())
    assert summary["success"] is True and len(summary["expectations"]) == 20
    html = (tmp_path / "post" / "data-docs" / "index.html").read_text()
    assert "post_migration.allocations" in html


def test_post_migration_names_what_bad_data_breaks(make_database, tmp_path):
    dsn = make_database()
    with db.connect(dsn) as conn:
        seed_database(conn, 500, seed=5, anchor=dt.date(2026, 12, 1))
        apply_up(conn, load_bundle(VERSION))
        counts = counts_before(dsn)
        # a cached confirmation filed under another restaurant, an event nobody consumes
        booking, other_restaurant = conn.execute(
            "SELECT b.id, (SELECT r.id FROM restaurants r WHERE r.id <> b.restaurant_id LIMIT 1)"
            " FROM bookings b LIMIT 1"
        ).fetchone()
        conn.execute(
            "INSERT INTO booking_confirmation_results (booking_id, hold_id, restaurant_id,"
            " idempotency_key, table_ids, assignment_window)"
            " VALUES (%s, gen_random_uuid(), %s, 'k', '{}', tstzrange(now(), now() + interval '1 hour'))",
            (booking, other_restaurant),
        )
        conn.execute("INSERT INTO capacity_outbox (event_type) VALUES ('capacity.hold.teleported')")
    counts["bookings"] += 1  # as if a booking had been lost

    summary = run_suite(dsn, suite_path(VERSION, "post_migration"), tmp_path, row_counts=counts)
    assert summary.success is False
    assert sorted(summary.failed) == [
        "booking_confirmation_results: every cached confirmation belongs to its booking's restaurant",
        "bookings: bookings has as many rows as before the apply",
        "capacity_outbox: capacity_outbox has as many rows as before the apply",
        "capacity_outbox: outbox event types are ones the consumers know",
    ]
    # What the review page shows of each failure: what was expected beside what was found.
    failed = {e["description"]: e for e in _details(tmp_path) if not e["success"]}
    events = failed["outbox event types are ones the consumers know"]
    assert events["expected"].startswith("event_type in {booking.created, ")
    assert events["observed"]["unexpected_count"] == 1
    assert events["observed"]["partial_unexpected_list"] == ["capacity.hold.teleported"]
    lost = failed["bookings has as many rows as before the apply"]
    assert lost["expected"] == f"{counts['bookings']:,} rows"
    assert lost["observed"] == counts["bookings"] - 1
    mismatch = failed["every cached confirmation belongs to its booking's restaurant"]
    assert mismatch["expected"] == "no rows from its query" and "SELECT" in mismatch["query"]


def test_pre_migration_catches_what_the_new_constraint_relies_on(make_database, tmp_path):
    dsn = make_database()
    with db.connect(dsn) as conn:
        seed_database(conn, 500, seed=6, anchor=dt.date(2026, 12, 1))
        conn.execute(
            "UPDATE allocations SET restaurant_id = (SELECT id FROM restaurants ORDER BY id DESC LIMIT 1)"
            " WHERE id = (SELECT id FROM allocations WHERE resource_type = 'table'"
            " AND restaurant_id <> (SELECT id FROM restaurants ORDER BY id DESC LIMIT 1) LIMIT 1)"
        )
        conn.execute(
            'UPDATE allocations SET "window" = tstzrange(lower("window"), upper("window"), \'[]\')'
            " WHERE id = (SELECT id FROM allocations ORDER BY id LIMIT 1)"
        )
    summary = run_suite(dsn, suite_path(VERSION, "pre_migration"), tmp_path)
    assert sorted(summary.failed) == [
        "allocations: each allocation's restaurant is its booking's and its table's",
        "allocations: every window is finite, non-empty and '[)'",
    ]


def test_without_row_counts_only_the_invariants_run(seeded_dsn, tmp_path):
    """On a live target the counts taken before the apply prove nothing: the suite then checks
    the invariants on the data as it is, and a row the application adds is no failure."""
    with db.connect(seeded_dsn) as conn:
        if conn.execute("SELECT to_regclass('booking_confirmation_results')").fetchone()[0] is None:
            apply_up(conn, load_bundle(VERSION))
        conn.execute("INSERT INTO capacity_outbox (event_type) VALUES ('booking.created')")
    summary = run_suite(seeded_dsn, suite_path(VERSION, "post_migration"), tmp_path)
    assert summary.success and summary.evaluated == 10
    assert not any("as many rows" in e["description"] for e in _details(tmp_path))


def _details(folder) -> list[dict]:
    return json.loads((folder / "validation-post_migration.json").read_text())["expectations"]


def test_unknown_suite_is_a_clear_error():
    with pytest.raises(RolloutError, match="no expectation suite 'nightly'"):
        suite_path(VERSION, "nightly")


def test_socket_dsns_become_sqlalchemy_urls():
    url = sqlalchemy_url("user=postgres dbname=booking host=/tmp/pg/staging")
    assert url == "postgresql+psycopg://postgres@/booking?host=%2Ftmp%2Fpg%2Fstaging"
    assert (
        sqlalchemy_url("postgresql://u:p@db.example:6543/x")
        == "postgresql+psycopg://u@db.example:6543/x"
    )


def test_the_password_and_tls_files_go_to_psycopg_as_they_are_not_in_the_url():
    dsn = (
        "postgresql://u:pw@db.example:5432/x?sslmode=verify-full&sslrootcert=/ca/root.crt"
        "&sslcert=/c/client.crt&sslkey=/c/client.key"
    )
    assert sqlalchemy_url(dsn) == "postgresql+psycopg://u@db.example:5432/x"
    assert connect_args(dsn) == {
        "password": "pw", "sslmode": "verify-full", "sslrootcert": "/ca/root.crt",
        "sslcert": "/c/client.crt", "sslkey": "/c/client.key",
    }  # fmt: skip


def test_one_report_with_gx_and_catalog_checks(seeded_dsn_for_report, tmp_path):
    dsn, counts = seeded_dsn_for_report
    report = validate_target(
        dsn, VERSION, "post_migration", tmp_path, target="staging", row_counts=counts
    )
    assert report.success, report.failures
    names = [c.name for c in report.catalog]
    assert "constraint public.allocations.allocations_no_overlap deferrability" in names
    assert "constraint public.allocations.allocations_resource_window_excl is gone" in names
    assert "index public.allocations_resource_window_idx is kept" in names
    assert "policy booking_confirmation_results_tenant" in names
    assert "anon may not SELECT public.booking_confirmation_results" in names
    assert "function public.confirm_hold_assignment_tx signature" in names
    markdown = (tmp_path / "validation-report.md").read_text()
    assert markdown.startswith("# Validation of staging: post_migration — passed")
    assert "Great Expectations: 20/20 expectations met" in markdown


def test_without_data_docs_every_check_still_runs(seeded_dsn_for_report, tmp_path):
    """A fleet target past the canary: the same expectations and catalog checks, no Data Docs."""
    dsn, counts = seeded_dsn_for_report
    report = validate_target(
        dsn, VERSION, "post_migration", tmp_path, row_counts=counts, data_docs=False
    )
    assert report.success, report.failures
    assert report.gx.evaluated == report.gx.successful == 20
    assert len(report.catalog) > 20
    assert not (tmp_path / "data-docs").exists()
    assert "Data Docs" not in (tmp_path / "validation-report.md").read_text()


def test_catalog_checks_fail_on_a_drifted_schema(seeded_dsn_for_report, tmp_path):
    dsn, counts = seeded_dsn_for_report
    with db.connect(dsn) as conn:
        conn.execute("GRANT SELECT ON booking_confirmation_results TO anon")
        conn.execute("ALTER TABLE booking_confirmation_results DISABLE ROW LEVEL SECURITY")
        try:
            report = validate_target(dsn, VERSION, "post_migration", tmp_path, row_counts=counts)
        finally:
            conn.execute("REVOKE SELECT ON booking_confirmation_results FROM anon")
            conn.execute("ALTER TABLE booking_confirmation_results ENABLE ROW LEVEL SECURITY")
    assert report.success is False
    assert report.gx.success is True
    assert sorted(report.failures) == [
        "catalog: anon may not SELECT public.booking_confirmation_results (granted)",
        "catalog: row level security on public.booking_confirmation_results (disabled or table missing)",
    ]
    assert (
        "| anon may not SELECT public.booking_confirmation_results | FAILED | granted |"
        in (tmp_path / "validation-report.md").read_text()
    )


CONFIRM = (
    "public.confirm_hold_assignment_tx(uuid, uuid, text, boolean, uuid, public.booking_status)"
)


def test_catalog_checks_hold_the_grants_to_exactly_the_spec(make_database, tmp_path):
    """Each role's privileges on the cache and EXECUTE on the confirm are checked one by one,
    and a spec entry that leaves a privilege unnamed is itself a failed check."""
    dsn = make_database()
    with db.connect(dsn) as conn:
        apply_up(conn, load_bundle(VERSION))
        spec_path = EXPECTATIONS_DIR / VERSION / "catalog_post_migration.json"
        checks = run_catalog_checks(conn, spec_path)
        assert [c.name for c in checks if not c.passed] == []
        names = {c.name for c in checks}
        assert "authenticated may not TRUNCATE public.booking_confirmation_results" in names
        assert "PUBLIC may not SELECT public.booking_confirmation_results" in names
        assert f"anon may not EXECUTE {CONFIRM}" in names
        assert f"authenticated may EXECUTE {CONFIRM}" in names
        # MAINTAIN is a privilege from PostgreSQL 17 on; older servers skip it
        has_maintain = "service_role may MAINTAIN public.booking_confirmation_results" in names
        assert has_maintain is (conn.info.server_version >= 170000)

        with conn.transaction(force_rollback=True):
            conn.execute("GRANT TRUNCATE ON booking_confirmation_results TO authenticated")
            conn.execute(f"GRANT EXECUTE ON FUNCTION {CONFIRM} TO PUBLIC")
            failed = {c.name: c.detail for c in run_catalog_checks(conn, spec_path) if not c.passed}
        assert failed == {
            "authenticated may not TRUNCATE public.booking_confirmation_results": "granted",
            f"anon may not EXECUTE {CONFIRM}": "granted",  # through PUBLIC
            f"PUBLIC may not EXECUTE {CONFIRM}": "granted",
        }

        spec = json.loads(spec_path.read_text())
        spec["grants"] = [{**spec["grants"][1], "denied": ["TRUNCATE", "TRIGGR"]}]
        spec["function_grants"] = []
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        failed = {
            c.name: c.detail
            for c in run_catalog_checks(conn, tmp_path / "spec.json")
            if not c.passed
        }
    assert failed == {
        "every privilege of authenticated on public.booking_confirmation_results is specified": (
            "neither allowed nor denied: REFERENCES, TRIGGER, MAINTAIN; no such privilege: TRIGGR"
        )
    }


@pytest.fixture(scope="module")
def seeded_dsn_for_report(make_database):
    dsn = make_database()
    with db.connect(dsn) as conn:
        seed_database(conn, 1000, seed=9, anchor=dt.date(2026, 12, 1))
    counts = counts_before(dsn)
    with db.connect(dsn) as conn:
        apply_up(conn, load_bundle(VERSION))
    return dsn, counts


def test_catalog_checks_see_the_deferral_mode(make_database):
    dsn = make_database()
    with db.connect(dsn) as conn:
        apply_up(conn, load_bundle(VERSION))
        conn.execute(
            "ALTER TABLE allocations DROP CONSTRAINT allocations_no_overlap, ADD CONSTRAINT allocations_no_overlap"
            ' EXCLUDE USING gist (resource_id WITH =, "window" WITH &&, restaurant_id WITH =, resource_type WITH =)'
            " WHERE (NOT shadow) DEFERRABLE INITIALLY DEFERRED"
        )
        checks = run_catalog_checks(
            conn, EXPECTATIONS_DIR / VERSION / "catalog_post_migration.json"
        )
    failed = {c.name: c.detail for c in checks if not c.passed}
    assert failed == {
        "constraint public.allocations.allocations_no_overlap definition": (
            'EXCLUDE USING gist (resource_id WITH =, "window" WITH &&, restaurant_id WITH =, resource_type WITH =)'
            " WHERE ((NOT shadow)) DEFERRABLE INITIALLY DEFERRED"
        ),
        "constraint public.allocations.allocations_no_overlap deferrability": "deferrable=True, initially deferred=True",
    }

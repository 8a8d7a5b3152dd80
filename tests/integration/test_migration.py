"""The migration itself: reversible, idempotent in shape, safe to roll back, and runnable by
a non-superuser owner made like Supabase's `postgres` role."""

from __future__ import annotations

import datetime as dt
import subprocess

import psycopg
import pytest

from rollout import db
from rollout.baseline import apply_baseline
from rollout.checksums import table_checksums
from rollout.clusters import client_binary
from rollout.errors import BundleError, RollbackRefused
from rollout.migrations import (
    apply_down,
    apply_up,
    list_down_conflicts,
    load_bundle,
    run_check,
    script_lock_order,
)
from rollout.schema import dump_schema, snapshot_schema
from rollout.seed import SEED_TABLES, seed_database
from tests.factories import insert_allocation, make_booking, make_hold, make_tenant

BUNDLE = load_bundle("20251113203000")
CONFIRM_SIGNATURE = "public.confirm_hold_assignment_tx(uuid,uuid,text,boolean,uuid,booking_status)"


@pytest.fixture(scope="module")
def seeded_dsn(make_database) -> str:
    dsn = make_database()
    with db.connect(dsn) as conn:
        seed_database(conn, 3000, seed=7, anchor=dt.date(2026, 12, 1))
    return dsn


def test_round_trip_restores_schema_and_leaves_every_row(seeded_dsn):
    with db.connect(seeded_dsn) as conn:
        baseline = snapshot_schema(conn)
        baseline_dump = dump_schema(seeded_dsn)
        rows_before = table_checksums(conn, SEED_TABLES)

        apply_up(conn, BUNDLE)
        run_check(conn, BUNDLE, "verify_up")
        after_up = snapshot_schema(conn)
        after_up_dump = dump_schema(seeded_dsn)
        assert table_checksums(conn, SEED_TABLES) == rows_before

        apply_down(conn, BUNDLE)
        run_check(conn, BUNDLE, "verify_down")
        assert snapshot_schema(conn) == baseline
        assert dump_schema(seeded_dsn) == baseline_dump
        assert table_checksums(conn, SEED_TABLES) == rows_before

        apply_up(conn, BUNDLE)
        assert snapshot_schema(conn) == after_up
        assert dump_schema(seeded_dsn) == after_up_dump
        apply_down(conn, BUNDLE)


def test_up_changes_exactly_what_domain_lists(fresh_db):
    with db.connect(fresh_db) as conn:
        before = snapshot_schema(conn)
        apply_up(conn, BUNDLE)
        after = snapshot_schema(conn)
        apply_down(conn, BUNDLE)
    added = {
        key for key in after.keys() - before.keys() if "booking_confirmation_results" not in key[1]
    }
    removed = before.keys() - after.keys()
    changed = {key for key in before.keys() & after.keys() if before[key] != after[key]}
    assert added == {
        ("constraint", "public.allocations.allocations_no_overlap"),
        ("index", "public.allocations_no_overlap"),
    }
    assert removed == {
        ("constraint", "public.allocations.allocations_resource_window_excl"),
        ("index", "public.allocations_resource_window_excl"),
        ("grant", f"{CONFIRM_SIGNATURE} to PUBLIC"),
        ("grant", f"{CONFIRM_SIGNATURE} to anon"),
    }
    assert changed == {("function", CONFIRM_SIGNATURE)}
    assert after[("constraint", "public.allocations.allocations_no_overlap")] == (
        'EXCLUDE USING gist (resource_id WITH =, "window" WITH &&, restaurant_id WITH =, resource_type WITH =)'
        " WHERE ((NOT shadow)) DEFERRABLE"
    )
    cache = {key: value for key, value in after.items() if "booking_confirmation_results" in key[1]}
    assert cache[("table", "public.booking_confirmation_results")].endswith("row level security on")
    assert cache[("index", "public.booking_confirmation_results_created_at_idx")]
    assert (
        "UNIQUE (hold_id)"
        in cache[
            (
                "constraint",
                "public.booking_confirmation_results.booking_confirmation_results_hold_id_key",
            )
        ]
    )
    cache_grants = {name: value for (kind, name), value in cache.items() if kind == "grant"}
    owner = after[("table", "public.allocations")].split(";")[0].removeprefix("owner ")
    assert cache_grants.keys() == {
        f"public.booking_confirmation_results to {role}"
        for role in (owner, "authenticated", "service_role")
    }  # nothing for anon or PUBLIC
    assert cache_grants["public.booking_confirmation_results to authenticated"] == (
        "DELETE, INSERT, SELECT, UPDATE"
    )
    # What Supabase's default privileges give service_role on any table (MAINTAIN too on 17+)
    assert (
        cache_grants["public.booking_confirmation_results to service_role"]
        == after[("grant", "public.bookings to service_role")]
    )
    assert after[("grant", f"{CONFIRM_SIGNATURE} to authenticated")] == "EXECUTE"
    assert after[("grant", f"{CONFIRM_SIGNATURE} to service_role")] == "EXECUTE"


def test_the_down_gives_the_confirm_its_baseline_grants_back(fresh_db):
    """The up takes EXECUTE on the confirm from PUBLIC and anon; the down returns exactly
    the baseline's grants (and pg_dump prints them as it did before the up)."""
    with db.connect(fresh_db) as conn:
        before, before_dump = snapshot_schema(conn), dump_schema(fresh_db)
        apply_up(conn, BUNDLE)
        for role, may in [("anon", False), ("public", False), ("authenticated", True)]:
            assert conn.execute(
                "SELECT has_function_privilege(%s, %s::regprocedure, 'EXECUTE')",
                (role, CONFIRM_SIGNATURE),
            ).fetchone() == (may,), role
        apply_down(conn, BUNDLE)
        run_check(conn, BUNDLE, "verify_down")
        after = snapshot_schema(conn)
        assert dump_schema(fresh_db) == before_dump

    def grants(snapshot):
        return {key: value for key, value in snapshot.items() if key[0] == "grant"}

    assert grants(after) == grants(before)
    assert grants(after)[("grant", f"{CONFIRM_SIGNATURE} to anon")] == "EXECUTE"
    assert after == before


@pytest.mark.parametrize(
    ("drift", "named"),
    [
        (
            "GRANT TRUNCATE, TRIGGER ON booking_confirmation_results TO authenticated",
            "grants on booking_confirmation_results: authenticated holds TRIGGER, authenticated holds TRUNCATE",
        ),
        (
            "GRANT EXECUTE ON FUNCTION confirm_hold_assignment_tx TO PUBLIC",
            "grants on confirm_hold_assignment_tx: anon holds EXECUTE, public holds EXECUTE",
        ),
    ],
)
def test_verify_up_names_a_grant_the_up_did_not_leave(fresh_db, drift, named):
    with db.connect(fresh_db) as conn:
        apply_up(conn, BUNDLE)
        conn.execute(drift)
        conn.commit()
        with pytest.raises(psycopg.Error) as error:
            run_check(conn, BUNDLE, "verify_up")
        assert error.value.sqlstate == "RV001"
        assert error.value.diag.message_primary == f"verify up: {named}"
        apply_down(conn, BUNDLE)


def test_down_refuses_when_a_shadow_overlaps_a_real_allocation(fresh_db):
    with db.connect(fresh_db) as conn:
        apply_up(conn, BUNDLE)
        tenant = make_tenant(conn)
        with conn.transaction():
            insert_allocation(conn, tenant.restaurant_id, tenant.table_ids[0], 0, 90)
            insert_allocation(conn, tenant.restaurant_id, tenant.table_ids[0], 30, 120, shadow=True)
        conn.commit()
        schema_up = snapshot_schema(conn)
        rows = table_checksums(conn, SEED_TABLES)

        with pytest.raises(RollbackRefused) as refused:
            apply_down(conn, BUNDLE)
        assert "1 allocation pair(s) would overlap" in str(refused.value)
        assert "down_conflicts.sql" in str(refused.value)
        assert snapshot_schema(conn) == schema_up
        assert table_checksums(conn, SEED_TABLES) == rows
        run_check(conn, BUNDLE, "verify_up")

        conflicts = list_down_conflicts(conn, BUNDLE)
        assert len(conflicts) == 1
        assert {conflicts[0]["shadow"], conflicts[0]["other_shadow"]} == {True, False}


def test_down_refuses_when_two_tenants_share_a_resource(fresh_db):
    with db.connect(fresh_db) as conn:
        apply_up(conn, BUNDLE)
        a, b = make_tenant(conn), make_tenant(conn)
        shared_resource = a.table_ids[1]
        insert_allocation(conn, a.restaurant_id, shared_resource, 0, 90)
        insert_allocation(conn, b.restaurant_id, shared_resource, 0, 90)
        conn.commit()
        with pytest.raises(RollbackRefused, match=r"1 allocation pair\(s\)"):
            apply_down(conn, BUNDLE)
        assert (
            conn.execute(
                "SELECT count(*) FROM allocations WHERE resource_id = %s", (shared_resource,)
            ).fetchone()[0]
            == 2
        )


@pytest.mark.parametrize("on_error_stop", [True, False])
def test_down_refuses_by_itself_under_psql(fresh_db, on_error_stop):
    """`psql -f down.sql` gets the same refusal, with or without ON_ERROR_STOP: the check
    lives in the script, and the failed transaction changes nothing."""
    with db.connect(fresh_db) as conn:
        apply_up(conn, BUNDLE)
        tenant = make_tenant(conn)
        insert_allocation(conn, tenant.restaurant_id, tenant.table_ids[0], 0, 90)
        insert_allocation(conn, tenant.restaurant_id, tenant.table_ids[0], 0, 30, shadow=True)
        rows = table_checksums(conn, SEED_TABLES)
    args = [str(client_binary("psql")), "-X", "-d", fresh_db, "-f", str(BUNDLE.down_path)]
    if on_error_stop:
        args[1:1] = ["-v", "ON_ERROR_STOP=1"]
    result = subprocess.run(args, capture_output=True, text=True)
    assert "ERROR:  rollback refused: 1 allocation pair(s) would overlap" in result.stderr
    assert (result.returncode != 0) is on_error_stop
    with db.connect(fresh_db) as conn:
        run_check(conn, BUNDLE, "verify_up")
        assert table_checksums(conn, SEED_TABLES) == rows


def test_migration_runs_as_a_non_superuser_owner(pg_server, make_database):
    """Supabase's postgres role: NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS."""
    role = f"rollout_owner_{make_database.__hash__() % 100000}"
    with db.connect(pg_server.admin_dsn, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(
            f"CREATE ROLE {role} NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS"
        )
    try:
        dsn = make_database(baseline=False, owner=role)
        with db.connect(db.with_user(dsn, role)) as conn:
            assert conn.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone() == (False,)
            apply_baseline(conn)
            seed_database(conn, 500, anchor=dt.date(2026, 12, 1))
            apply_up(conn, BUNDLE)
            run_check(conn, BUNDLE, "verify_up")
            apply_down(conn, BUNDLE)
            run_check(conn, BUNDLE, "verify_down")
        db.drop_database(pg_server.admin_dsn, dsn.rsplit("dbname=", 1)[-1].split()[0])
    finally:
        with db.connect(pg_server.admin_dsn, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_an_owner_without_bypassrls_confirms_without_a_tenant_context(pg_server, make_database):
    """The confirm binds a caller to its tenant only when RLS would: the tables' owner is not
    bound by their RLS, BYPASSRLS or not, so it confirms any tenant's hold, as the
    benchmarks' writers and the assignment suite do as the migration owner."""
    role = f"rollout_plain_owner_{make_database.__hash__() % 100000}"
    with db.connect(pg_server.admin_dsn, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} NOSUPERUSER NOBYPASSRLS LOGIN")
    dsn = None
    try:
        dsn = make_database(baseline=False, owner=role)
        with db.connect(db.with_user(dsn, role)) as conn:
            apply_baseline(conn)
            apply_up(conn, BUNDLE)
            tenant = make_tenant(conn)
            booking = make_booking(conn, tenant, 0)
            hold = make_hold(conn, tenant, booking, [tenant.table_ids[0]], 0)
            rows = conn.execute(
                "SELECT * FROM confirm_hold_assignment_tx(%s, %s, 'owner')", (hold, booking)
            ).fetchall()
            assert [r[0] for r in rows] == [tenant.table_ids[0]]
    finally:  # the database first: a role that owns one cannot be dropped
        if dsn is not None:
            db.drop_database(pg_server.admin_dsn, dsn.rsplit("dbname=", 1)[-1].split()[0])
        with db.connect(pg_server.admin_dsn, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_up_refuses_twice(fresh_db):
    """The script itself is not re-runnable; the ledger (not the SQL) makes re-runs no-ops."""
    with db.connect(fresh_db) as conn:
        apply_up(conn, BUNDLE)
        with pytest.raises(psycopg.errors.DuplicateTable):
            apply_up(conn, BUNDLE)
        run_check(conn, BUNDLE, "verify_up")
        apply_down(conn, BUNDLE)


def test_unknown_version_is_a_clear_error():
    with pytest.raises(BundleError, match="no migration bundle with version '1999'"):
        load_bundle("1999")


def test_confirm_succeeds_without_the_outbox_table(fresh_db):
    with db.connect(fresh_db) as conn:
        apply_up(conn, BUNDLE)
        conn.execute("DROP TABLE capacity_outbox")
        tenant = make_tenant(conn)
        booking = make_booking(conn, tenant, 0)
        hold = make_hold(conn, tenant, booking, [tenant.table_ids[0]], 0)
        rows = conn.execute(
            "SELECT * FROM confirm_hold_assignment_tx(%s, %s, %s)", (hold, booking, "no-outbox")
        ).fetchall()
        conn.commit()
        assert [r[0] for r in rows] == [tenant.table_ids[0]]
        assert conn.execute(
            "SELECT count(*) FROM booking_confirmation_results WHERE booking_id = %s", (booking,)
        ).fetchone() == (1,)


def test_apply_times_the_lock_phase(make_database):
    dsn = make_database()
    with db.connect(dsn) as conn:
        seed_database(conn, 3000, anchor=dt.date(2026, 12, 1))
        up = apply_up(conn, BUNDLE)
        down = apply_down(conn, BUNDLE)
    for result in (up, down):
        assert 0 < result.lock_seconds <= result.seconds
    assert (up.direction, down.direction, up.version) == ("up", "down", BUNDLE.version)


# The tables this transaction holds in a mode that stops the application's writes.
MY_WRITE_BLOCKING_LOCKS = (
    "SELECT DISTINCT c.relnamespace::regnamespace || '.' || c.relname FROM pg_locks l"
    " JOIN pg_class c ON c.oid = l.relation WHERE l.pid = pg_backend_pid() AND c.relkind = 'r'"
    " AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')"
)


def test_the_down_takes_first_exactly_the_tables_its_statements_lock(fresh_db):
    """What the runner locks at the start of each attempt of the down is what the down's own
    statements lock against writers (run here and read back from pg_locks): the drop of the
    cache locks bookings and restaurants through its foreign keys. In the application's order,
    bookings before allocations."""
    with db.connect(fresh_db) as conn:
        apply_up(conn, BUNDLE)
        order = script_lock_order(conn, BUNDLE, "down")
        with conn.transaction():
            conn.execute(BUNDLE.body("down").encode())
            locked = {row[0] for row in conn.execute(MY_WRITE_BLOCKING_LOCKS)}
            raise psycopg.Rollback()
    # The dropped cache is gone from pg_class by then: it is locked by being dropped.
    assert locked | {"public.booking_confirmation_results"} == set(order)
    assert order == (
        "public.bookings",
        "public.allocations",
        "public.restaurants",
        "public.booking_confirmation_results",
    )

"""The baseline schema: roles as Supabase makes them, defaults, and the pre-migration
behaviour of the assignment functions."""

from __future__ import annotations

import psycopg
import pytest

from rollout import db
from tests.factories import make_booking, make_hold, make_tenant


def test_supabase_roles(baseline_db):
    with db.connect(baseline_db) as conn:
        roles = dict(
            (name, (login, inherit, bypass))
            for name, login, inherit, bypass in conn.execute(
                "SELECT rolname, rolcanlogin, rolinherit, rolbypassrls FROM pg_roles"
                " WHERE rolname IN ('anon', 'authenticated', 'service_role')"
            )
        )
        assert roles == {
            "anon": (False, False, False),
            "authenticated": (False, False, False),
            "service_role": (False, False, True),
        }


def test_a_row_needs_only_its_meaningful_columns(baseline_db):
    with db.connect(baseline_db) as conn:
        restaurant = conn.execute(
            "INSERT INTO restaurants (name, slug) VALUES ('R', 'r-min') RETURNING id, timezone"
        ).fetchone()
        assert restaurant[1] == "Europe/London"
        row = conn.execute(
            'INSERT INTO allocations (restaurant_id, resource_type, resource_id, "window")'
            " VALUES (%s, 'table', gen_random_uuid(), tstzrange(now(), now() + interval '1 hour'))"
            " RETURNING shadow, is_maintenance, id IS NOT NULL",
            (restaurant[0],),
        ).fetchone()
        assert row == (False, False, True)
        conn.rollback()


def test_new_tables_grant_everything_to_the_api_roles(baseline_db):
    """Supabase's default privileges: RLS, not grants, keeps the API roles out."""
    with db.connect(baseline_db) as conn:
        grants = conn.execute(
            "SELECT has_table_privilege('anon', 'public.allocations', 'INSERT'),"
            " has_table_privilege('authenticated', 'public.bookings', 'DELETE')"
        ).fetchone()
        assert grants == (True, True)
        rls = conn.execute(
            "SELECT bool_and(relrowsecurity) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
        ).fetchone()
        assert rls == (True,)


def test_before_migration_an_assignment_conflict_surfaces_at_commit(baseline_db):
    """INITIALLY DEFERRED: assign_tables_atomic_v2's handler never sees the overlap."""
    with db.connect(baseline_db, autocommit=False) as conn:
        tenant = make_tenant(conn)
        first, second = make_booking(conn, tenant, 0), make_booking(conn, tenant, 30)
        conn.commit()
        conn.execute(
            "SELECT * FROM assign_tables_atomic_v2(%s, %s, 'a')", (first, [tenant.table_ids[0]])
        )
        conn.commit()
        conn.execute(
            "SELECT * FROM assign_tables_atomic_v2(%s, %s, 'b')", (second, [tenant.table_ids[0]])
        )
        with pytest.raises(psycopg.errors.ExclusionViolation):
            conn.commit()


def test_before_migration_a_unique_conflict_is_p0001_in_the_call(baseline_db):
    with db.connect(baseline_db) as conn:
        tenant = make_tenant(conn)
        booking = make_booking(conn, tenant, 1000)
        conn.execute(
            "SELECT * FROM assign_tables_atomic_v2(%s, %s, 'a')", (booking, [tenant.table_ids[0]])
        )
        with pytest.raises(psycopg.errors.RaiseException, match="allocations_no_overlap"):
            conn.execute(
                "SELECT * FROM assign_tables_atomic_v2(%s, %s, 'other-key')",
                (booking, [tenant.table_ids[0]]),
            )
        conn.rollback()


def test_before_migration_confirm_assigns_and_deletes_the_hold(baseline_db):
    with db.connect(baseline_db) as conn:
        tenant = make_tenant(conn)
        booking = make_booking(conn, tenant, 2000)
        hold = make_hold(conn, tenant, booking, tenant.table_ids[:2], 2000)
        rows = conn.execute(
            "SELECT * FROM confirm_hold_assignment_tx(%s, %s, 'k')", (hold, booking)
        ).fetchall()
        conn.commit()
        assert sorted(r[0] for r in rows) == sorted(tenant.table_ids[:2])
        assert conn.execute(
            "SELECT count(*) FROM table_holds WHERE id = %s", (hold,)
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM allocations WHERE booking_id = %s", (booking,)
        ).fetchone() == (3,)
        # The origin's replay after success fails: the hold is gone (domain.md's hazard).
        with pytest.raises(psycopg.errors.NoDataFound, match="hold_not_found"):
            conn.execute("SELECT * FROM confirm_hold_assignment_tx(%s, %s, 'k')", (hold, booking))
        conn.rollback()

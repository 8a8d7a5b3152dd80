"""Row-level security on the confirmation cache, with the roles as Supabase makes them:
`authenticated` sees its tenant only, `anon` nothing, `service_role` bypasses RLS
(BYPASSRLS; domain.md: a tenant policy cannot limit it, whatever the issue text says)."""

from __future__ import annotations

import psycopg
import pytest

from rollout import db
from tests.factories import make_booking, make_hold

INSERT_CACHE = (
    "INSERT INTO booking_confirmation_results (booking_id, hold_id, restaurant_id, idempotency_key,"
    " table_ids, assignment_window) VALUES (%s, gen_random_uuid(), %s, %s, '{}', tstzrange(now(), now() + interval '1 hour'))"
)


@pytest.fixture
def tenants(target_dsn, new_tenant):
    dsn = target_dsn
    with db.connect(dsn) as conn:
        made = {}
        for name in ("a", "b"):
            tenant = new_tenant()
            booking = make_booking(conn, tenant, 0)
            hold = make_hold(conn, tenant, booking, [tenant.table_ids[0]], 0)
            conn.execute("SELECT * FROM confirm_hold_assignment_tx(%s, %s, 'rls')", (hold, booking))
            made[name] = (tenant, booking)
        conn.commit()
    return dsn, made


def as_role(conn, role: str, restaurant_id=None) -> None:
    conn.execute(f"SET LOCAL ROLE {role}")
    if restaurant_id:
        conn.execute("SELECT set_config('app.restaurant_id', %s, true)", (str(restaurant_id),))


def test_authenticated_reads_and_writes_only_its_tenant(tenants):
    dsn, made = tenants
    (a, booking_a), (b, booking_b) = made["a"], made["b"]
    with db.connect(dsn, autocommit=False) as conn:
        as_role(conn, "authenticated", a.restaurant_id)
        seen = conn.execute("SELECT restaurant_id FROM booking_confirmation_results").fetchall()
        assert seen == [(a.restaurant_id,)]
        conn.execute(INSERT_CACHE, (booking_a, a.restaurant_id, "own-tenant"))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(INSERT_CACHE, (booking_b, b.restaurant_id, "other-tenant"))
        conn.rollback()


def test_authenticated_without_context_is_refused(tenants):
    dsn, _ = tenants
    with db.connect(dsn, autocommit=False) as conn:
        as_role(conn, "authenticated")
        with pytest.raises(
            psycopg.errors.InsufficientPrivilege, match="restaurant context required"
        ):
            conn.execute("SELECT * FROM booking_confirmation_results").fetchall()


def test_anon_gets_nothing(tenants):
    dsn, made = tenants
    with db.connect(dsn, autocommit=False) as conn:
        as_role(conn, "anon", made["a"][0].restaurant_id)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM booking_confirmation_results").fetchall()


def test_service_role_bypasses_the_policy(tenants):
    dsn, made = tenants
    with db.connect(dsn, autocommit=False) as conn:
        as_role(conn, "service_role", made["a"][0].restaurant_id)
        seen = {
            r for (r,) in conn.execute("SELECT restaurant_id FROM booking_confirmation_results")
        }
        assert seen == {made["a"][0].restaurant_id, made["b"][0].restaurant_id}

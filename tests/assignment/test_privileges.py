"""Who may do what with the confirmation cache and the confirm (issue 16, points 7 and 8),
acted out under Supabase's API roles with `SET LOCAL ROLE`, in synthetic tenants.

- `authenticated` writes the cache under RLS but may not TRUNCATE it (TRUNCATE ignores RLS)
  nor attach a trigger (it would run as the owner when the SECURITY DEFINER confirm writes).
- `anon` may not execute the confirm: PostgREST would expose it to anyone with the anon key.
- A tenant-bound caller confirms, and replays, only its own tenant's holds; `service_role`
  (BYPASSRLS) confirms any tenant's, as it reads any tenant's rows.

Every attempt runs in a transaction that is rolled back, with a short lock_timeout: against
staging, a statement that is wrongly allowed must neither keep its effect nor wait long."""

from __future__ import annotations

import psycopg
import pytest

from rollout import db
from tests.factories import make_booking, make_hold

CONFIRM = "SELECT * FROM confirm_hold_assignment_tx(%s, %s, %s)"
CACHE = "public.booking_confirmation_results"
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


@pytest.fixture
def conn(target_dsn, new_tenant):
    """Closed before new_tenant removes the tenants (it is requested first, so torn down last)."""
    with db.connect(target_dsn, autocommit=False) as connection:
        yield connection
        connection.rollback()


def act_as(conn, role: str, restaurant_id=None) -> None:
    """This transaction runs as `role`, with `restaurant_id` as its tenant context if given."""
    conn.execute("SET LOCAL lock_timeout = '5s'")
    conn.execute(f"SET LOCAL ROLE {role}")
    if restaurant_id is not None:
        conn.execute("SELECT set_config('app.restaurant_id', %s, true)", (str(restaurant_id),))


def refused(conn, query, params=()) -> str:
    """The message of the 42501 the statement raises; the transaction is rolled back."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as error:
        conn.execute(query, params)
    conn.rollback()
    return error.value.diag.message_primary


def held_tables(conn, tenant, start: int):
    """A booking of the tenant and a live hold on its first table for it, committed."""
    booking = make_booking(conn, tenant, start)
    hold = make_hold(conn, tenant, booking, [tenant.table_ids[0]], start)
    conn.commit()
    return booking, hold


def hold_is_untouched(conn, hold, booking) -> bool:
    return conn.execute(
        "SELECT (SELECT count(*) FROM table_holds WHERE id = %s),"
        " (SELECT count(*) FROM allocations WHERE booking_id = %s AND NOT shadow)",
        (hold, booking),
    ).fetchone() == (1, 0)


def test_authenticated_holds_only_row_privileges_on_the_cache(conn):
    held = {
        privilege: conn.execute(
            "SELECT has_table_privilege('authenticated', %s, %s)", (CACHE, privilege)
        ).fetchone()[0]
        for privilege in TABLE_PRIVILEGES
    }
    assert [p for p, has in held.items() if has] == ["SELECT", "INSERT", "UPDATE", "DELETE"]


def test_authenticated_may_not_truncate_the_cache(conn, new_tenant):
    """TRUNCATE ignores RLS: one tenant's session would wipe every tenant's confirmations."""
    tenant = new_tenant()
    act_as(conn, "authenticated", tenant.restaurant_id)
    assert refused(conn, "TRUNCATE booking_confirmation_results").startswith("permission denied")


def test_authenticated_may_not_attach_a_trigger_to_the_cache(conn, new_tenant):
    """A trigger on the cache runs as the owner when the SECURITY DEFINER confirm writes.
    (The trigger function is a built-in one, so nothing is created to try this.)"""
    tenant = new_tenant()
    act_as(conn, "authenticated", tenant.restaurant_id)
    message = refused(
        conn,
        "CREATE TRIGGER assignment_suite_probe BEFORE UPDATE ON booking_confirmation_results"
        " FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    )
    assert message.startswith("permission denied")


def test_anon_may_not_confirm(conn, new_tenant):
    """PostgREST exposes every function anon may execute as an RPC to the public anon key."""
    tenant = new_tenant()
    booking, hold = held_tables(conn, tenant, 0)
    act_as(conn, "anon", tenant.restaurant_id)
    assert refused(conn, CONFIRM, (hold, booking, "anon")).startswith("permission denied")
    assert hold_is_untouched(conn, hold, booking)


def test_authenticated_confirms_its_own_tenants_hold_only(conn, new_tenant):
    mine, theirs = new_tenant(), new_tenant()
    my_booking, my_hold = held_tables(conn, mine, 0)
    their_booking, their_hold = held_tables(conn, theirs, 0)

    act_as(conn, "authenticated")  # no tenant context at all
    assert refused(conn, CONFIRM, (my_hold, my_booking, "k")) == "restaurant context required"

    act_as(conn, "authenticated", mine.restaurant_id)
    assert refused(conn, CONFIRM, (their_hold, their_booking, "k")) == "booking_not_in_restaurant"
    act_as(conn, "authenticated", mine.restaurant_id)  # my booking, their hold
    assert refused(conn, CONFIRM, (their_hold, my_booking, "k")) == "hold_not_in_restaurant"
    assert hold_is_untouched(conn, their_hold, their_booking)

    act_as(conn, "authenticated", mine.restaurant_id)
    rows = conn.execute(CONFIRM, (my_hold, my_booking, "k")).fetchall()
    conn.commit()
    assert [r[0] for r in rows] == [mine.table_ids[0]]
    assert conn.execute(
        "SELECT restaurant_id FROM booking_confirmation_results WHERE booking_id = %s",
        (my_booking,),
    ).fetchall() == [(mine.restaurant_id,)]


def test_a_replay_returns_the_cache_to_its_own_tenant_only(conn, new_tenant):
    """The replay path reads the cache before any hold: it must not answer another tenant."""
    mine, theirs = new_tenant(), new_tenant()
    booking, hold = held_tables(conn, mine, 200)
    act_as(conn, "authenticated", mine.restaurant_id)
    first = conn.execute(CONFIRM, (hold, booking, "replayed")).fetchall()
    conn.commit()

    act_as(conn, "authenticated", theirs.restaurant_id)
    assert refused(conn, CONFIRM, (hold, booking, "replayed")) == "booking_not_in_restaurant"

    act_as(conn, "authenticated", mine.restaurant_id)
    assert conn.execute(CONFIRM, (hold, booking, "replayed")).fetchall() == first
    conn.rollback()


@pytest.mark.parametrize("context", ["none", "another tenant's"])
def test_service_role_confirms_any_tenants_hold(conn, new_tenant, context):
    """service_role bypasses RLS, so the confirm does not bind it to a tenant context either
    (domain.md: a tenant context does not limit it)."""
    tenant, other = new_tenant(), new_tenant()
    booking, hold = held_tables(conn, tenant, 400)
    act_as(conn, "service_role", other.restaurant_id if context != "none" else None)
    rows = conn.execute(CONFIRM, (hold, booking, "service")).fetchall()
    conn.commit()
    assert [r[0] for r in rows] == [tenant.table_ids[0]]
    assert conn.execute(
        "SELECT restaurant_id FROM booking_confirmation_results WHERE booking_id = %s", (booking,)
    ).fetchall() == [(tenant.restaurant_id,)]

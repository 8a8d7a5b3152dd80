"""assign_tables_atomic_v2 and confirm_hold_assignment_tx after the migration, through the
real functions, in synthetic tenants: overlap enforcement, deferral, results, idempotent
replay, errors, concurrency, outbox events."""

from __future__ import annotations

import datetime as dt
import threading
import time

import psycopg
import pytest

from rollout import db
from tests.factories import at, insert_allocation, make_booking, make_hold

CONFIRM = "SELECT * FROM confirm_hold_assignment_tx(%s, %s, %s)"
COUNTS = (
    "SELECT (SELECT count(*) FROM allocations WHERE restaurant_id = %(r)s),"
    " (SELECT count(*) FROM booking_table_assignments a JOIN bookings b ON b.id = a.booking_id"
    "  WHERE b.restaurant_id = %(r)s),"
    " (SELECT count(*) FROM booking_confirmation_results WHERE restaurant_id = %(r)s),"
    " (SELECT count(*) FROM capacity_outbox WHERE restaurant_id = %(r)s)"
)


@pytest.fixture
def conn(target_dsn, new_tenant):
    """Closed before new_tenant removes the tenants: a failed test's open transaction must
    not hold the rows the cleanup deletes."""
    with db.connect(target_dsn, autocommit=False) as connection:
        yield connection
        connection.rollback()  # whatever a failed test left open is dropped, never committed


def sqlstate_and_message(conn, query, params) -> tuple[str, str]:
    with pytest.raises(psycopg.Error) as error:
        conn.execute(query, params)
    conn.rollback()
    return error.value.sqlstate, error.value.diag.message_primary


def test_assign_turns_a_conflict_into_p0001_inside_the_call(conn, new_tenant):
    tenant = new_tenant()
    first, second = make_booking(conn, tenant, 0), make_booking(conn, tenant, 30)
    conn.execute(
        "SELECT * FROM assign_tables_atomic_v2(%s, %s, 'k1')", (first, [tenant.table_ids[0]])
    )
    conn.commit()
    state, message = sqlstate_and_message(
        conn, "SELECT * FROM assign_tables_atomic_v2(%s, %s, 'k2')", (second, [tenant.table_ids[0]])
    )
    assert (state, message) == ("P0001", "allocations_no_overlap")
    # touching windows are no conflict
    third = make_booking(conn, tenant, 90)
    conn.execute(
        "SELECT * FROM assign_tables_atomic_v2(%s, %s, 'k3')", (third, [tenant.table_ids[0]])
    )
    conn.commit()


def test_shadows_and_other_tenants_do_not_conflict(conn, new_tenant):
    """The new constraint's meaning: it is weaker than the old one, never stricter."""
    tenant, other = new_tenant(), new_tenant()
    table = tenant.table_ids[0]
    insert_allocation(conn, tenant.restaurant_id, table, 0, 90)
    insert_allocation(conn, tenant.restaurant_id, table, 30, 60, shadow=True)
    insert_allocation(conn, other.restaurant_id, table, 0, 90)
    conn.commit()
    with pytest.raises(psycopg.errors.ExclusionViolation):
        insert_allocation(conn, tenant.restaurant_id, table, 60, 120)
    conn.rollback()


def test_swaps_need_deferral_and_real_overlaps_still_fail(conn, new_tenant):
    tenant = new_tenant()
    table = tenant.table_ids[0]
    first = insert_allocation(conn, tenant.restaurant_id, table, 0, 90)
    second = insert_allocation(conn, tenant.restaurant_id, table, 90, 180)
    conn.commit()
    move = 'UPDATE allocations SET "window" = tstzrange(%s, %s) WHERE id = %s'
    with pytest.raises(psycopg.errors.ExclusionViolation):  # immediate by default now
        conn.execute(move, (at(90), at(180), first))
    conn.rollback()

    conn.execute("SET CONSTRAINTS allocations_no_overlap DEFERRED")
    conn.execute(move, (at(90), at(180), first))
    conn.execute(move, (at(0), at(90), second))
    conn.commit()

    conn.execute("SET CONSTRAINTS allocations_no_overlap DEFERRED")
    insert_allocation(conn, tenant.restaurant_id, table, 30, 60)
    with pytest.raises(psycopg.errors.ExclusionViolation):
        conn.commit()


def test_confirm_writes_assignments_allocations_cache_and_outbox_and_deletes_the_hold(
    conn, new_tenant
):
    tenant = new_tenant()
    booking = make_booking(conn, tenant, 0)
    tables = sorted(tenant.table_ids[:2])
    hold = make_hold(conn, tenant, booking, tables, 0)
    conn.commit()

    rows = conn.execute(CONFIRM, (hold, booking, "confirm-1")).fetchall()
    conn.commit()

    merge_group = rows[0][3]
    assert merge_group is not None
    assert rows == [(t, at(0), at(90), merge_group) for t in tables]
    allocations = conn.execute(
        "SELECT resource_type, resource_id, shadow FROM allocations WHERE booking_id = %s ORDER BY 1, 2",
        (booking,),
    ).fetchall()
    assert allocations == [
        ("merge_group", merge_group, False),
        *(("table", t, False) for t in tables),
    ]
    assert conn.execute(
        "SELECT table_id FROM booking_table_assignments WHERE booking_id = %s ORDER BY 1",
        (booking,),
    ).fetchall() == [(t,) for t in tables]
    cache = conn.execute(
        "SELECT hold_id, restaurant_id, table_ids FROM booking_confirmation_results WHERE booking_id = %s",
        (booking,),
    ).fetchall()
    assert cache == [(hold, tenant.restaurant_id, tables)]
    events = conn.execute(
        "SELECT event_type FROM capacity_outbox WHERE booking_id = %s ORDER BY 1", (booking,)
    ).fetchall()
    assert events == [("capacity.assignment.sync",), ("capacity.hold.confirmed",)]
    assert conn.execute("SELECT count(*) FROM table_holds WHERE id = %s", (hold,)).fetchone() == (
        0,
    )


def test_replay_returns_the_first_result_and_writes_nothing(conn, new_tenant):
    tenant = new_tenant()
    booking = make_booking(conn, tenant, 200)
    hold = make_hold(conn, tenant, booking, [tenant.table_ids[2]], 200)
    conn.commit()
    first = conn.execute(CONFIRM, (hold, booking, "replay-key")).fetchall()
    conn.commit()
    counts = conn.execute(COUNTS, {"r": tenant.restaurant_id}).fetchone()

    replay = conn.execute(CONFIRM, (hold, booking, "replay-key")).fetchall()
    conn.commit()
    assert replay == first
    assert conn.execute(COUNTS, {"r": tenant.restaurant_id}).fetchone() == counts


def test_documented_errors(conn, new_tenant):
    tenant = new_tenant()
    booking, other = make_booking(conn, tenant, 400), make_booking(conn, tenant, 400)
    hold = make_hold(conn, tenant, booking, [tenant.table_ids[0]], 400)
    expired = make_hold(
        conn,
        tenant,
        booking,
        [tenant.table_ids[1]],
        400,
        expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
    )
    conn.commit()

    assert sqlstate_and_message(conn, CONFIRM, (hold, other, "k")) == (
        "P0001",
        "hold_booking_mismatch",
    )
    assert sqlstate_and_message(conn, CONFIRM, (expired, booking, "k")) == ("P0001", "hold_expired")

    conn.execute(CONFIRM, (hold, booking, "first-key"))
    conn.commit()
    assert sqlstate_and_message(conn, CONFIRM, (hold, booking, "second-key")) == (
        "P0001",
        "hold_already_confirmed",
    )
    missing = "00000000-0000-0000-0000-000000000000"
    assert sqlstate_and_message(conn, CONFIRM, (missing, booking, "k")) == (
        "P0002",
        "hold_not_found",
    )


def _confirm_in_thread(dsn, hold, booking, key, out):
    try:
        with db.connect(dsn, autocommit=False) as other:
            out["pid"] = other.info.backend_pid
            out["rows"] = other.execute(CONFIRM, (hold, booking, key)).fetchall()
            other.commit()
    except psycopg.Error as exc:
        out["error"] = (exc.sqlstate, exc.diag.message_primary)


def _wait_until_blocked(conn, out):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = out.get("pid")
        if pid and conn.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone() == ("Lock",):
            return
        time.sleep(0.05)
    raise AssertionError("the second confirm never waited on the hold's lock")


@pytest.mark.parametrize("second_key", ["same-key", "other-key"])
def test_concurrent_confirms_of_one_hold_yield_one_assignment(target_dsn, new_tenant, second_key):
    with db.connect(target_dsn, autocommit=False) as first, db.connect(target_dsn) as watcher:
        tenant = new_tenant()
        booking = make_booking(first, tenant, 600)
        hold = make_hold(first, tenant, booking, tenant.table_ids[:2], 600)
        first.commit()

        first_rows = first.execute(
            CONFIRM, (hold, booking, "same-key")
        ).fetchall()  # holds the lock
        out: dict = {}
        thread = threading.Thread(
            target=_confirm_in_thread, args=(target_dsn, hold, booking, second_key, out)
        )
        thread.start()
        _wait_until_blocked(watcher, out)
        first.commit()
        thread.join(10)

        if second_key == "same-key":
            assert out.get("rows") == first_rows
        else:
            assert out.get("error") == ("P0001", "hold_already_confirmed")
        assert watcher.execute(
            "SELECT count(*) FROM booking_table_assignments WHERE booking_id = %s", (booking,)
        ).fetchone() == (2,)
        assert watcher.execute(
            "SELECT count(*) FROM allocations WHERE booking_id = %s", (booking,)
        ).fetchone() == (3,)

"""What the exclusion constraint allows, before and after the migration. The new constraint
is weaker than the old one (tenant column added, shadows left out), never stricter."""

from __future__ import annotations

import psycopg
import pytest

from rollout import db
from rollout.migrations import apply_up, load_bundle
from tests.factories import insert_allocation, make_tenant

BUNDLE = load_bundle("20251113203000")


@pytest.fixture(params=["before", "after"])
def stage(request, make_database):
    dsn = make_database()
    if request.param == "after":
        with db.connect(dsn) as conn:
            apply_up(conn, BUNDLE)
    return request.param, dsn


def _commit_pair(dsn: str, first: dict, second: dict) -> str | None:
    """Insert two allocations in one transaction; the SQLSTATE that stopped it, or None."""
    with db.connect(dsn, autocommit=False) as conn:
        tenant_a, tenant_b = make_tenant(conn), make_tenant(conn)
        conn.commit()
        tenants = {"a": tenant_a, "b": tenant_b}
        resource = tenant_a.table_ids[0]
        try:
            for spec in (first, second):
                insert_allocation(
                    conn,
                    tenants[spec["tenant"]].restaurant_id,
                    resource,
                    *spec["window"],
                    shadow=spec.get("shadow", False),
                )
            conn.commit()
        except psycopg.Error as exc:
            conn.rollback()
            return exc.sqlstate
    return None


CASES = {
    # name: (first, second, outcome before, outcome after)
    "same tenant, overlapping": (
        {"tenant": "a", "window": (0, 90)}, {"tenant": "a", "window": (60, 150)}, "23P01", "23P01"),
    "other tenant, same resource id": (
        {"tenant": "a", "window": (0, 90)}, {"tenant": "b", "window": (60, 150)}, "23P01", None),
    "shadow over real": (
        {"tenant": "a", "window": (0, 90)}, {"tenant": "a", "window": (30, 60), "shadow": True}, "23P01", None),
    "touching [) windows": (
        {"tenant": "a", "window": (0, 90)}, {"tenant": "a", "window": (90, 180)}, None, None),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_constraint_matrix(stage, case):
    when, dsn = stage
    first, second, before, after = CASES[case]
    assert _commit_pair(dsn, first, second) == (before if when == "before" else after)


def test_before_the_conflict_surfaces_at_commit(make_database):
    """INITIALLY DEFERRED: the INSERT succeeds, COMMIT raises 23P01."""
    dsn = make_database()
    with db.connect(dsn, autocommit=False) as conn:
        tenant = make_tenant(conn)
        conn.commit()
        insert_allocation(conn, tenant.restaurant_id, tenant.table_ids[0], 0, 90)
        insert_allocation(conn, tenant.restaurant_id, tenant.table_ids[0], 30, 120)  # no error yet
        with pytest.raises(psycopg.errors.ExclusionViolation):
            conn.commit()


def test_after_the_conflict_surfaces_at_the_insert(make_database):
    dsn = make_database()
    with db.connect(dsn) as conn:
        apply_up(conn, BUNDLE)
        tenant = make_tenant(conn)
        insert_allocation(conn, tenant.restaurant_id, tenant.table_ids[0], 0, 90)
        with pytest.raises(psycopg.errors.ExclusionViolation):
            insert_allocation(conn, tenant.restaurant_id, tenant.table_ids[0], 30, 120)


def test_after_deferred_swap_succeeds_and_real_overlap_fails_at_commit(make_database):
    dsn = make_database()
    with db.connect(dsn, autocommit=False) as conn:
        apply_up(conn, BUNDLE)
        tenant = make_tenant(conn)
        table = tenant.table_ids[0]
        first = insert_allocation(conn, tenant.restaurant_id, table, 0, 90)
        second = insert_allocation(conn, tenant.restaurant_id, table, 90, 180)
        conn.commit()
        swap = 'UPDATE allocations SET "window" = (SELECT "window" FROM allocations WHERE id = %s) WHERE id = %s'

        # Immediate (the default now): the first half of a swap already conflicts.
        with pytest.raises(psycopg.errors.ExclusionViolation):
            conn.execute(swap, (second, first))
        conn.rollback()

        # Deferred: both halves of the swap run, the check waits for COMMIT and passes.
        conn.execute("SET CONSTRAINTS allocations_no_overlap DEFERRED")
        windows = dict(
            conn.execute(
                'SELECT id, "window" FROM allocations WHERE id IN (%s, %s)', (first, second)
            ).fetchall()
        )
        conn.execute('UPDATE allocations SET "window" = %s WHERE id = %s', (windows[second], first))
        conn.execute('UPDATE allocations SET "window" = %s WHERE id = %s', (windows[first], second))
        conn.commit()
        swapped = dict(
            conn.execute(
                'SELECT id, "window" FROM allocations WHERE id IN (%s, %s)', (first, second)
            ).fetchall()
        )
        assert swapped == {first: windows[second], second: windows[first]}

        # Deferred, a real overlap still fails, at COMMIT.
        conn.execute("SET CONSTRAINTS allocations_no_overlap DEFERRED")
        insert_allocation(conn, tenant.restaurant_id, table, 30, 60)
        with pytest.raises(psycopg.errors.ExclusionViolation):
            conn.commit()

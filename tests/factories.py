"""Small builders of tenant data for tests, through the real tables."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import psycopg

T0 = dt.datetime(2030, 6, 1, 18, 0, tzinfo=dt.UTC)  # far enough ahead that holds are live


def at(minutes: int) -> dt.datetime:
    """T0 plus some minutes: keeps windows in tests readable."""
    return T0 + dt.timedelta(minutes=minutes)


@dataclass(frozen=True)
class Tenant:
    restaurant_id: uuid.UUID
    zone_id: uuid.UUID
    table_ids: list[uuid.UUID]


def make_tenant(conn: psycopg.Connection, tables: int = 4, slug_prefix: str = "test-") -> Tenant:
    slug = f"{slug_prefix}{uuid.uuid4().hex[:12]}"
    restaurant_id = conn.execute(
        "INSERT INTO restaurants (name, slug) VALUES (%s, %s) RETURNING id", (slug, slug)
    ).fetchone()[0]
    zone_id = conn.execute(
        "INSERT INTO zones (restaurant_id, name) VALUES (%s, 'Main') RETURNING id", (restaurant_id,)
    ).fetchone()[0]
    table_ids = [
        conn.execute(
            "INSERT INTO table_inventory (restaurant_id, table_number, zone_id)"
            " VALUES (%s, %s, %s) RETURNING id",
            (restaurant_id, f"T{n}", zone_id),
        ).fetchone()[0]
        for n in range(1, tables + 1)
    ]
    return Tenant(restaurant_id, zone_id, table_ids)


def make_booking(
    conn: psycopg.Connection, tenant: Tenant, start: int, minutes: int = 90
) -> uuid.UUID:
    return conn.execute(
        "INSERT INTO bookings (restaurant_id, start_at, end_at) VALUES (%s, %s, %s) RETURNING id",
        (tenant.restaurant_id, at(start), at(start + minutes)),
    ).fetchone()[0]


def make_hold(
    conn: psycopg.Connection,
    tenant: Tenant,
    booking_id: uuid.UUID | None,
    table_ids: list[uuid.UUID],
    start: int,
    minutes: int = 90,
    expires_at: dt.datetime | None = None,
) -> uuid.UUID:
    expires_at = expires_at or dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    hold_id = conn.execute(
        "INSERT INTO table_holds (restaurant_id, booking_id, start_at, end_at, expires_at)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (tenant.restaurant_id, booking_id, at(start), at(start + minutes), expires_at),
    ).fetchone()[0]
    for table_id in table_ids:
        conn.execute(
            "INSERT INTO table_hold_members (hold_id, table_id) VALUES (%s, %s)",
            (hold_id, table_id),
        )
    return hold_id


def insert_allocation(
    conn: psycopg.Connection,
    restaurant_id: uuid.UUID,
    resource_id: uuid.UUID,
    start: int,
    end: int,
    *,
    shadow: bool = False,
    resource_type: str = "table",
) -> uuid.UUID:
    return conn.execute(
        'INSERT INTO allocations (restaurant_id, resource_type, resource_id, "window", shadow)'
        " VALUES (%s, %s, %s, tstzrange(%s, %s), %s) RETURNING id",
        (restaurant_id, resource_type, resource_id, at(start), at(end), shadow),
    ).fetchone()[0]


def freeze_new_restaurants(conn: psycopg.Connection) -> None:
    """A trigger that refuses every new restaurant: staging misbehaves where only the
    application's own tests look (they make synthetic restaurants)."""
    conn.execute(
        "CREATE FUNCTION public.refuse_new_restaurants() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'restaurants are frozen'; END $$"
    )
    conn.execute(
        "CREATE TRIGGER restaurants_frozen BEFORE INSERT ON public.restaurants"
        " FOR EACH ROW EXECUTE FUNCTION public.refuse_new_restaurants()"
    )

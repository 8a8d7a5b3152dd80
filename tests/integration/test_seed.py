"""The seed generator: exact size, deterministic, realistic, and it leaves the schema as it was."""

from __future__ import annotations

import datetime as dt

import pytest

from rollout import db
from rollout.checksums import table_checksums
from rollout.errors import RolloutError
from rollout.schema import snapshot_schema
from rollout.seed import SEED_TABLES, seed_database, seed_steps

ANCHOR = dt.date(2026, 12, 1)


@pytest.fixture(scope="module")
def seeded(make_database):
    dsn = make_database()
    with db.connect(dsn) as conn:
        schema_before = snapshot_schema(conn)
        messages: list[str] = []
        result = seed_database(conn, 20_000, seed=11, anchor=ANCHOR, progress=messages.append)
        return dsn, result, schema_before, messages


def test_exact_allocation_count_and_progress(seeded):
    _, result, _, messages = seeded
    assert result.row_counts["allocations"] == 20_000
    steps = len(seed_steps())
    assert any(m.startswith("seed [1/") for m in messages)
    assert any(
        m.startswith(f"seed [{steps}/{steps}] rebuild indexes and constraints") for m in messages
    )


def test_schema_is_unchanged_by_the_bulk_load(seeded):
    dsn, _, schema_before, _ = seeded
    with db.connect(dsn) as conn:
        assert snapshot_schema(conn) == schema_before


def test_same_seed_same_rows_other_seed_other_rows(seeded, make_database):
    dsn, _, _, _ = seeded
    same, other = make_database(), make_database()
    with db.connect(dsn) as conn:
        reference = table_checksums(conn, SEED_TABLES)
    with db.connect(same) as conn:
        seed_database(conn, 20_000, seed=11, anchor=ANCHOR)
        assert table_checksums(conn, SEED_TABLES) == reference
    with db.connect(other) as conn:
        seed_database(conn, 20_000, seed=12, anchor=ANCHOR)
        assert table_checksums(conn, ("allocations",)) != {"allocations": reference["allocations"]}


def test_data_looks_like_a_booking_system(seeded):
    dsn, _, _, _ = seeded
    with db.connect(dsn) as conn:
        one = lambda query: conn.execute(query).fetchone()[0]  # noqa: E731
        assert one("SELECT count(DISTINCT timezone) FROM restaurants") >= 3
        assert one("SELECT count(*) FROM zones") >= 9
        span = one("SELECT max(start_at)::date - min(start_at)::date FROM bookings")
        assert 88 <= span <= 91
        assert one("SELECT count(*) FROM allocations WHERE resource_type = 'merge_group'") > 0
        # every merge group has its two tables, for the same booking and window
        assert (
            one(
                "SELECT count(*) FROM allocations m WHERE m.resource_type = 'merge_group' AND 2 <> "
                "(SELECT count(*) FROM allocations t WHERE t.booking_id = m.booking_id"
                ' AND t.resource_type = \'table\' AND t."window" = m."window")'
            )
            == 0
        )
        shadows = one("SELECT count(*) FROM allocations WHERE shadow")
        assert 0.04 * 20_000 <= shadows <= 0.06 * 20_000
        assert (
            one(
                "SELECT count(*) FROM table_holds h WHERE h.expires_at > now()"
                " AND EXISTS (SELECT 1 FROM table_hold_members m WHERE m.hold_id = h.id)"
            )
            > 0
        )
        assert one("SELECT count(DISTINCT event_type) FROM capacity_outbox") >= 2
        assert one("SELECT count(DISTINCT status) FROM bookings") >= 4
        # the pre-migration constraint holds (shadows included): it would have refused the load
        assert (
            one(
                "SELECT count(*) FROM allocations a JOIN allocations b ON a.resource_type = b.resource_type"
                ' AND a.resource_id = b.resource_id AND a.id < b.id AND a."window" && b."window"'
            )
            == 0
        )


def test_refuses_a_database_that_already_has_data(seeded):
    dsn, _, _, _ = seeded
    with db.connect(dsn) as conn, pytest.raises(RolloutError, match="already holds restaurants"):
        seed_database(conn, 10)


def test_refuses_a_non_positive_size(baseline_db):
    with db.connect(baseline_db) as conn, pytest.raises(RolloutError, match="positive"):
        seed_database(conn, 0)

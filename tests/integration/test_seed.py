"""The seed generator: exact size, deterministic, realistic, and it leaves the schema as it was."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from rollout import db
from rollout.checksums import table_checksums
from rollout.errors import RolloutError
from rollout.schema import snapshot_schema
from rollout.seed import SEED_TABLES, ProgressLines, ProgressTicker, seed_database, seed_steps

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
    # every index and constraint set aside was put back, the exclusion constraint among them
    assert "allocations_resource_window_excl" in result.rebuild_seconds


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


def test_the_ticker_speaks_while_a_long_statement_runs(baseline_db):
    """Lines arrive during the statement, not after it, from the ticker's own connection; its
    thread is gone when the block ends."""
    lines: list[str] = []
    with db.connect(baseline_db) as conn:
        with ProgressTicker(conn, ProgressLines(lines.append), every_s=0.2) as ticker:
            ticker.doing("waiting for the server")
            conn.execute("SELECT pg_sleep(2)")
            during = list(lines)
        assert not ticker.running
    assert during, "no progress line while the statement ran"
    assert all(line.startswith("waiting for the server: ") for line in during)


def test_the_ticker_reports_the_phase_of_an_index_build(make_database):
    """What pg_stat_progress_create_index says of the build, read while it runs: an index whose
    key takes 0.1 s a row to compute builds for 3 s."""
    lines: list[str] = []
    with db.connect(make_database()) as conn:
        conn.execute("CREATE TABLE slow_rows AS SELECT generate_series(1, 30) AS n")
        conn.execute(
            "CREATE FUNCTION slow_key(int) RETURNS int IMMUTABLE LANGUAGE sql "
            "AS 'SELECT $1 FROM pg_sleep(0.1)'"
        )
        with ProgressTicker(conn, ProgressLines(lines.append), every_s=0.2) as ticker:
            ticker.doing("building slow_rows_key")
            conn.execute("CREATE INDEX slow_rows_key ON slow_rows (slow_key(n))")
    assert any("CREATE INDEX on slow_rows: building index" in line for line in lines), lines


def test_a_failing_seed_rolls_back_and_leaves_no_thread(make_database):
    """Stopped once its indexes and constraints are set aside and rows are in: nothing stays,
    neither rows nor the set-aside schema nor the ticker's thread."""

    def fail_after_the_bookings(line: str) -> None:
        if "] bookings: " in line:
            raise RuntimeError("stopped after the bookings")

    with db.connect(make_database()) as conn:
        schema_before = snapshot_schema(conn)
        with pytest.raises(RuntimeError, match="stopped after the bookings"):
            seed_database(conn, 500, anchor=ANCHOR, progress=fail_after_the_bookings)
        assert conn.execute("SELECT count(*) FROM bookings").fetchone()[0] == 0
        assert snapshot_schema(conn) == schema_before
    assert not [t for t in threading.enumerate() if t.name == "seed-progress"]

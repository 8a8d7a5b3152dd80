"""The copy kept in step with the live table: a change log filled by triggers, a backfill in
batches, and catch-up rounds that bring the copy to the live table's state in one snapshot.

The triggers log only primary keys (sql/online/capture.sql). A catch-up round takes every
logged key out of the log and gives the copy those rows as the live table has them in the
round's snapshot, so only committed, final states ever reach the copy (never the intermediate
states an INITIALLY DEFERRED constraint lets a transaction pass through), and after a round the
copy equals the live table in that snapshot: whatever constraint the live table satisfies, the
copy does too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from rollout.online.definition import ONLINE_SQL, Definition, qualified
from rollout.paths import sql_text

LOG = ("rollout", "online_log")
CAPTURE_FUNCTION = ("rollout", "online_capture")
REFUSE_TRUNCATE = ("rollout", "online_refuse_truncate")
KEYS = ("pg_temp", "rollout_online_keys")


@dataclass(frozen=True)
class Tables:
    """The names one online apply works with."""

    live: tuple[str, str]  # schema, name
    copy: tuple[str, str]
    key: tuple[str, ...]  # the primary key's columns
    columns: tuple[str, ...]  # copied: in both tables, not generated

    @classmethod
    def of(cls, live: tuple[str, str], source: Definition, target: Definition) -> Tables:
        targets = {c.name for c in target.columns if not c.generated}
        columns = tuple(c.name for c in source.columns if not c.generated and c.name in targets)
        return cls(live, (target.schema, target.name), tuple(target.key), columns)

    def compose(self, template: str) -> sql.Composed:
        ids = lambda names, alias=None: sql.SQL(", ").join(  # noqa: E731
            sql.Identifier(alias, n) if alias else sql.Identifier(n) for n in names
        )
        return sql.SQL(template).format(
            live=qualified(*self.live),
            copy=qualified(*self.copy),
            log=qualified(*LOG),
            keys=qualified(*KEYS),
            capture=qualified(*CAPTURE_FUNCTION),
            refuse_truncate=qualified(*REFUSE_TRUNCATE),
            key=ids(self.key),
            c_key=ids(self.key, "c"),
            k_key=ids(self.key, "k"),
            l_key=ids(self.key, "l"),
            columns=ids(self.columns),
            l_columns=ids(self.columns, "l"),
            live_row=sql.SQL("ROW({})").format(ids(self.columns, "l")),
            copy_row=sql.SQL("ROW({})").format(ids(self.columns, "c")),
        )

    def sql(self, name: str) -> sql.Composed:
        return self.compose(sql_text(ONLINE_SQL / name))


def create_log(conn: psycopg.Connection, tables: Tables) -> None:
    """The log table and the trigger functions (no lock on the live table)."""
    conn.execute(tables.sql("capture.sql"))


def create_keys_table(conn: psycopg.Connection, tables: Tables) -> None:
    """This session's scratch table of the keys one catch-up round takes."""
    conn.execute(tables.compose("DROP TABLE IF EXISTS {keys}"))
    conn.execute(tables.sql("keys_table.sql"))


def install_triggers(conn: psycopg.Connection, tables: Tables) -> None:
    """Takes SHARE ROW EXCLUSIVE on the live table: run it under the lock retries."""
    conn.execute(tables.sql("capture_triggers.sql"))


def drop_triggers(conn: psycopg.Connection, table: sql.Composable) -> None:
    """Takes ACCESS EXCLUSIVE on the table (briefly): run it under the lock retries."""
    for event in ("insert", "update", "delete", "truncate"):
        conn.execute(
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                sql.Identifier(f"rollout_online_capture_{event}"), table
            )
        )


def blocks(conn: psycopg.Connection, tables: Tables) -> tuple[int, int]:
    """(blocks of the live table now, rows per block as last counted)."""
    size = conn.execute(
        sql_text(ONLINE_SQL / "table_size.sql").encode(), {"table": ".".join(tables.live)}
    ).fetchone()
    total_blocks, rows = int(size[2]), int(size[3])
    return total_blocks, max(1, rows // max(1, total_blocks))


def backfill(
    conn: psycopg.Connection,
    tables: Tables,
    *,
    batch_rows: int,
    between_batches: Callable[[int, int, int], None],
    in_batch: Callable[[], None],
) -> int:
    """Copy every row the live table had when its changes began to be logged, in batches of
    blocks, each its own short transaction; the rows copied."""
    total_blocks, per_block = blocks(conn, tables)
    step = max(1, batch_rows // per_block)
    statement = tables.sql("backfill.sql")
    copied = 0
    for start in range(0, total_blocks, step):
        with conn.transaction():
            conn.execute("SELECT set_config('row_security', 'off', true)")
            cur = conn.execute(statement, {"from_block": start, "to_block": start + step})
            copied += max(0, cur.rowcount)
            in_batch()
        between_batches(min(start + step, total_blocks), total_blocks, copied)
    return copied


@dataclass(frozen=True)
class Round:
    taken: int  # log entries taken (keys, deduplicated)
    written: int  # rows the copy was given


def catch_up(conn: psycopg.Connection, tables: Tables, in_round: Callable[[], None]) -> Round:
    """One round on conn's current transaction: the caller makes it REPEATABLE READ, or holds
    the live table's lock."""
    conn.execute("SELECT set_config('row_security', 'off', true)")
    with conn.cursor() as cur:
        cur.execute(tables.sql("catch_up.sql"))
        taken = cur.rowcount
        written = 0
        while cur.nextset():
            written = cur.rowcount
    in_round()
    return Round(max(0, taken), max(0, written))


def catch_up_round(conn: psycopg.Connection, tables: Tables, in_round: Callable[[], None]) -> Round:
    """One catch-up round in a REPEATABLE READ transaction of its own."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return catch_up(conn, tables, in_round)


@dataclass(frozen=True)
class Comparison:
    live_rows: int
    copy_rows: int
    equal: bool


def caught_up_and_compared(
    conn: psycopg.Connection, tables: Tables, in_round: Callable[[], None]
) -> tuple[Round, Comparison]:
    """A catch-up round, then both tables compared in the same snapshot: rows and a checksum
    of every row's copied columns."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        done = catch_up(conn, tables, in_round)
        live_rows, live_sum, copy_rows, copy_sum = conn.execute(
            tables.sql("compare.sql")
        ).fetchone()
    return done, Comparison(live_rows, copy_rows, live_rows == copy_rows and live_sum == copy_sum)


def pending(conn: psycopg.Connection) -> int:
    """Log entries not yet taken (committed ones)."""
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(qualified(*LOG))).fetchone()[0]

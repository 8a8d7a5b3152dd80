"""A table's definition as statements, and what a bundle's lock phase makes of it.

`read_definition` turns everything a table carries (columns, defaults, constraints, indexes,
RLS and its policies, grants, comments, triggers, publication membership, options) into the
statements that give it to a table of another name (sql/online/definition.sql).

`rehearse` learns what the lock phase changes without knowing what it says: on an empty copy
of the table, in a transaction that is rolled back, it builds the copy from the table's
definition, runs the lock phase rewritten to the copy's name, and reads the copy's definition
back. Whatever the lock phase did beyond the copy's own definition (another table locked, a
function created, a row written, a column renamed) refuses the online apply, naming it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from rollout.diff import diff_snapshots
from rollout.errors import RolloutError
from rollout.paths import SQL_DIR, sql_text
from rollout.schema import snapshot_schema

ONLINE_SQL = SQL_DIR / "online"
SHADOW_SCHEMA = "rollout_shadow"  # the copy is built here, under the table's own name
RETIRED_SCHEMA = "rollout_retired"  # the old table waits here to be dropped after the swap

# When each kind of statement runs (sql/online/definition.sql).
EMPTY_COPY = ("table", "column", "check", "option", "comment", "grant", "policy", "pkey")
AFTER_BACKFILL = ("index", "constraint", "cluster", "replica")
IN_SWAP = ("fkey", "trigger")  # and the table's publications, from its own definition
# What a lock phase may take on a relation other than the copy: reading it, and the lock a new
# foreign key takes on the table it references.
HARMLESS_LOCKS = {"AccessShareLock"}
_DML = re.compile(
    r"\b(INSERT\s+INTO|UPDATE\s+[\w.\"]+\s+SET|DELETE\s+FROM|TRUNCATE|COPY|MERGE\s+INTO)\b",
    re.IGNORECASE,
)


class OnlineRefused(RolloutError):
    """The online apply cannot do this safely; nothing was changed. The message says why and
    what to do instead (usually: apply_mode "locking")."""


@dataclass(frozen=True)
class Statement:
    kind: str
    name: str
    text: str


@dataclass(frozen=True)
class Column:
    number: int
    name: str
    type: str
    generated: bool
    key_position: int  # its place in the primary key, 0 when not in it


@dataclass(frozen=True)
class Definition:
    """A table's definition, as statements for a table named `schema.name`."""

    schema: str
    name: str
    statements: tuple[Statement, ...]
    columns: tuple[Column, ...]

    def of(self, *kinds: str) -> list[Statement]:
        return [s for s in self.statements if s.kind in kinds]

    @property
    def key(self) -> list[str]:
        return [
            c.name for c in sorted(self.columns, key=lambda c: c.key_position) if c.key_position
        ]

    @property
    def foreign_keys_to_validate(self) -> list[str]:
        return [s.name for s in self.of("validate")]


def qualified(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def pg_catalog_path(conn: psycopg.Connection) -> None:
    """For this transaction: every name catalog functions print is schema-qualified."""
    conn.execute("SELECT set_config('search_path', 'pg_catalog, pg_temp', true)")


def read_columns(conn: psycopg.Connection, table: str) -> tuple[Column, ...]:
    rows = conn.execute(sql_text(ONLINE_SQL / "columns.sql").encode(), {"table": table})
    return tuple(
        Column(number, name, type_, generated, position)
        for number, name, type_, generated, _in_key, position in rows.fetchall()
    )


def read_definition(conn: psycopg.Connection, table: str, schema: str, name: str) -> Definition:
    """`table`'s definition as statements for `schema.name` (run with pg_catalog_path)."""
    rows = conn.execute(
        sql_text(ONLINE_SQL / "definition.sql").encode(),
        {"src": table, "schema": schema, "name": name},
    ).fetchall()
    return Definition(
        schema,
        name,
        tuple(Statement(kind, name_, text) for _ord, kind, name_, text in rows),
        read_columns(conn, table),
    )


def run_statements(conn: psycopg.Connection, statements: Iterable[Statement]) -> None:
    for statement in statements:
        conn.execute(statement.text.encode())


def reset_privileges(conn: psycopg.Connection, table: str) -> None:
    """Take back what default privileges gave a new table, before its own grants are given."""
    rows = conn.execute(sql_text(ONLINE_SQL / "acl_reset.sql").encode(), {"table": table})
    for (statement,) in rows.fetchall():
        conn.execute(statement.encode())


def build_empty_copy(conn: psycopg.Connection, definition: Definition) -> None:
    """The copy with everything it needs before rows come (columns, checks, options, comments,
    grants, policies, the primary key)."""
    copy = f"{definition.schema}.{definition.name}"
    for kind in EMPTY_COPY:
        run_statements(conn, definition.of(kind))
        if kind == "comment":
            reset_privileges(conn, copy)


def rewrite_names(lock_phase: str, live_schema: str, names: Iterable[str]) -> str:
    """The lock phase with `live_schema.<name>` (the table and its indexes, quoted or not)
    naming the copy's instead; unqualified names find the copy first on the search path."""
    schema = re.escape(live_schema)
    text = lock_phase
    for name in sorted(set(names), key=len, reverse=True):
        target = re.escape(name)
        pattern = rf'(?<![\w$"])(?:{schema}|"{schema}")\s*\.\s*(?:{target}|"{target}")(?![\w$"])'
        text = re.sub(pattern, f"{SHADOW_SCHEMA}.{name}", text, flags=re.IGNORECASE)
    return text


def strip_comments_and_strings(text: str) -> str:
    text = re.sub(r"--[^\n]*", " ", text)
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    return re.sub(r"'(?:[^']|'')*'", "''", text)


def mentions_foreign_keys(lock_phase: str, names: Iterable[str]) -> bool:
    """Whether the lock phase may add, drop or change a foreign key (by name, by kind, or by
    dropping a column one is on)."""
    text = strip_comments_and_strings(lock_phase)
    if re.search(r"\b(FOREIGN\s+KEY|REFERENCES|DROP\s+COLUMN|DROP\s+CONSTRAINT\s+%|EXECUTE)\b",
                 text, re.IGNORECASE):  # fmt: skip
        return True
    return any(re.search(rf"(?<![\w$]){re.escape(n)}(?![\w$])", text) for n in names)


def user_schemas(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(sql_text(ONLINE_SQL / "user_schemas.sql").encode())
    return [r[0] for r in rows.fetchall()]


def locks_held(conn: psycopg.Connection) -> set[tuple[int, str, str]]:
    rows = conn.execute(sql_text(ONLINE_SQL / "locks_held.sql").encode()).fetchall()
    return {(oid, name, mode) for oid, name, mode in rows}


def rehearse(
    conn: psycopg.Connection, table: str, lock_phase: str, search_path: str
) -> tuple[Definition, Definition]:
    """(the table's definition, the definition its lock phase gives it), both for the copy's
    name, learnt on an empty copy in a subtransaction that is rolled back; OnlineRefused when
    the lock phase does anything but change the table's own definition. Call inside a
    transaction (it may lock the tables the table's foreign keys reference, briefly)."""
    live_oid, live_schema, name = conn.execute(
        sql_text(ONLINE_SQL / "relation.sql").encode(), {"table": table}
    ).fetchone()
    copy = f"{SHADOW_SCHEMA}.{name}"
    result: list[Definition] = []
    problems: list[str] = []
    dml = _DML.search(strip_comments_and_strings(lock_phase))
    if dml:
        problems.append(
            f"it changes rows ({dml.group(0).split()[0].upper()}), which the copy would not repeat"
        )
    with conn.transaction(savepoint_name="rollout_online_rehearsal", force_rollback=True):
        pg_catalog_path(conn)
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SHADOW_SCHEMA))
        )
        before = read_definition(conn, table, SHADOW_SCHEMA, name)
        result.append(before)
        build_empty_copy(conn, before)
        # Foreign keys lock the tables they reference: built on the copy only when the lock
        # phase may touch them; else they come over from the table as they are.
        with_foreign_keys = mentions_foreign_keys(lock_phase, [s.name for s in before.of("fkey")])
        run_statements(
            conn, before.of(*AFTER_BACKFILL, "trigger", *(("fkey",) if with_foreign_keys else ()))
        )
        indexes = [
            r[0]
            for r in conn.execute(
                sql_text(ONLINE_SQL / "index_names.sql").encode(), {"table": table}
            ).fetchall()
        ]
        rewritten = rewrite_names(lock_phase, live_schema, [name, *indexes])
        columns_before = read_columns(conn, copy)
        ours_before = _ours(conn)
        locks_before = locks_held(conn)
        schemas = user_schemas(conn)
        snapshot_before = snapshot_schema(conn, schemas)
        conn.execute(
            "SELECT set_config('search_path', %s, true)",
            (f"{SHADOW_SCHEMA}, {search_path}",),
        )
        try:
            with conn.transaction(savepoint_name="rollout_online_lock_phase"):
                conn.execute(rewritten.encode())
        except psycopg.errors.LockNotAvailable:
            raise
        except psycopg.Error as exc:
            message = str(exc).strip().splitlines()[0]
            raise OnlineRefused(
                f"the lock phase fails on an empty copy of {table} ({message}); objects it "
                "needs must exist before the online apply starts (the statements before the "
                "lock phase run only in the swap's transaction). Apply this bundle with "
                "apply_mode 'locking', or create them in an earlier bundle"
            ) from None
        pg_catalog_path(conn)
        after = read_definition(conn, copy, SHADOW_SCHEMA, name)
        if not with_foreign_keys:
            carried = tuple(s for s in before.statements if s.kind in ("fkey", "validate"))
            after = dataclasses.replace(after, statements=after.statements + carried)
        result.append(after)
        problems += _locks_problems(
            conn, locks_before, locks_held(conn), live_oid, after, ours_before | _ours(conn)
        )
        changed = diff_snapshots(snapshot_before, snapshot_schema(conn, schemas))
        for kind, object_name in sorted({**changed.added, **changed.removed, **changed.changed}):
            problems.append(f"it changes {kind} {object_name}, beside the table")
        problems += _column_problems(columns_before, read_columns(conn, copy))
    if problems:
        raise OnlineRefused(
            f"the lock phase cannot run online on a copy of {table}: "
            + "; ".join(dict.fromkeys(problems))
            + ". Apply this bundle with apply_mode 'locking'. Nothing was changed"
        )
    if [s.text for s in before.statements] == [s.text for s in after.statements]:
        raise OnlineRefused(
            f"the lock phase does not change {table}'s definition: there is nothing to build "
            "online. Apply this bundle with apply_mode 'locking'"
        )
    return result[0], result[1]


def _locks_problems(
    conn: psycopg.Connection,
    before: set[tuple[int, str, str]],
    after: set[tuple[int, str, str]],
    live_oid: int,
    target: Definition,
    ours: set[int],
) -> list[str]:
    referenced = {
        r[0]
        for r in conn.execute(
            sql_text(ONLINE_SQL / "referenced_tables.sql").encode(),
            {"tables": [f"{target.schema}.{target.name}"]},
        ).fetchall()
    }
    problems = []
    for oid, name, mode in sorted(after - before):
        if oid == live_oid:
            problems.append(
                f"it takes {mode} on {name} itself (a name the engine does not rewrite, e.g. "
                "in dynamic SQL)"
            )
        elif oid in ours or mode in HARMLESS_LOCKS:
            continue
        elif mode == "ShareRowExclusiveLock" and oid in referenced:
            continue  # a foreign key of the table's: added in the swap
        else:
            problems.append(f"it takes {mode} on {name}")
    return problems


def _ours(conn: psycopg.Connection) -> set[int]:
    """The copy's relations (and the catalogs): a lock phase may lock these as it likes."""
    return {
        r[0]
        for r in conn.execute(
            sql_text(ONLINE_SQL / "copy_relations.sql").encode(), {"schema": SHADOW_SCHEMA}
        ).fetchall()
    }


def _column_problems(before: tuple[Column, ...], after: tuple[Column, ...]) -> list[str]:
    kept = {c.number: c for c in after}
    problems = []
    for column in before:
        now = kept.get(column.number)
        if now is None:
            continue  # dropped: the copy does without it
        if now.name != column.name:
            problems.append(f"it renames column {column.name} to {now.name}")
        elif now.type != column.type:
            problems.append(
                f"it changes column {column.name}'s type from {column.type} to {now.type} "
                "(a USING clause would not be repeated by the copy)"
            )
    return problems

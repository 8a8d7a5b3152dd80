"""Supabase's own migration history, kept in step with ours.

Supabase's CLI keeps migrations as `supabase/migrations/<14-digit version>_<name>.sql` and
records what it applied in `supabase_migrations.schema_migrations (version, statements, name)`
(its `pkg/migration/history.go`): `supabase db push` applies every file whose version has no
row there, `supabase migration list` compares files and rows, `supabase migration repair
--status reverted <version>` deletes the row. A migration applied by this rollout gets the
row the CLI would have written, in the same transaction as our ledger row, and loses it in the
down's transaction: the next `db push` does not apply it again, and `migration list` agrees.

The CLI stores the file split into statements by its own splitter (`pkg/parser`): a `;` ends
a statement unless it is inside a quoted string or identifier, a comment, a dollar-quoted body,
parentheses or a `BEGIN ATOMIC … END` body, or escaped by a backslash; each statement keeps its
comments and loses its trailing `;` and surrounding white space; empty ones are dropped.
`split_statements` does the same, so the row is exactly the CLI's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from rollout.paths import SQL_DIR, sql_text

SUPABASE_SQL = SQL_DIR / "supabase"
FILE_NAME = re.compile(r"^(?P<version>[0-9]+)_(?P<name>.*)\.sql$")


@dataclass(frozen=True)
class SupabaseMigration:
    version: str
    name: str
    statements: list[str]

    @classmethod
    def from_file(cls, path: Path) -> SupabaseMigration:
        match = FILE_NAME.match(path.name)
        if not match:
            raise ValueError(
                f"{path.name}: Supabase migration files are named <version>_<name>.sql"
            )
        return cls(match["version"], match["name"], split_statements(path.read_text("utf-8")))


# --- the CLI's statement splitter, as a state machine over characters ------------------------
# Each state's step(ch, text) returns the next state, or None to end the statement at ch.


class _Ready:
    def step(self, ch: str, text: str) -> Any:
        if ch == "$":
            return _Tag(len(text) - 1)
        if ch in ("'", '"'):
            return _Quote(ch)
        if ch == "-":
            return _MaybeComment()
        if ch == "/":
            return _Block()
        if ch == "\\":
            return _Escape()
        if ch == ";":
            return None
        if ch == "(":
            return _Nested(self, ")")
        if ch in ("c", "C"):
            # BEGIN ATOMIC: "atomic" as a word of its own (white space before it) opens a body
            # that only END closes; "is_atomic", "col1atomic" do not.
            start = len(text) - len("ATOMIC")
            if start > 0 and text[start:].upper() == "ATOMIC" and text[start - 1].isspace():
                return _Nested(self, "END")
        return self


class _MaybeComment:
    def step(self, ch: str, text: str) -> Any:
        if ch == "-":
            return _Until("\n")  # a line comment: nothing in it counts
        return _Ready().step(ch, text)


class _Block:
    def __init__(self) -> None:
        self.depth = 0

    def step(self, ch: str, text: str) -> Any:
        window = text[-2:]
        if window == "/*":
            self.depth += 1
            return self
        if self.depth == 0:
            return _Ready().step(ch, text)
        if window == "*/":
            self.depth -= 1
            if self.depth == 0:
                return _Ready()
        return self


class _Quote:
    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter
        self.closing = False

    def step(self, ch: str, text: str) -> Any:
        if self.closing:
            if ch == self.delimiter:  # a doubled quote stays in the string
                self.closing = False
                return self
            return _Ready().step(ch, text)
        if ch == self.delimiter:
            self.closing = True
        return self


class _Until:
    """Inside a dollar-quoted body (or a line comment): nothing counts until the delimiter."""

    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter

    def step(self, ch: str, text: str) -> Any:
        return _Ready() if text.endswith(self.delimiter) else self


class _Tag:
    def __init__(self, start: int) -> None:
        self.start = start

    def step(self, ch: str, text: str) -> Any:
        if ch == "$":
            return _Until(text[self.start :])
        if ch.isalpha() or ch.isdigit() or ch == "_":
            return self
        return _Ready().step(ch, text)


class _Escape:
    def step(self, ch: str, text: str) -> Any:
        return _Ready()


class _Nested:
    """Inside parentheses or a BEGIN ATOMIC body: a `;` does not end the statement."""

    def __init__(self, outer: Any, delimiter: str) -> None:
        self.inner: Any = outer
        self.delimiter = delimiter

    def step(self, ch: str, text: str) -> Any:
        following = self.inner.step(ch, text)
        if following is not None:
            self.inner = following
        if isinstance(self.inner, _Ready) and text[-len(self.delimiter) :].upper() == (
            self.delimiter.upper()
        ):
            return _Ready()
        return self


def split(sql: str) -> list[str]:
    """The statements of a script, each as written (comments and white space kept)."""
    statements, state, start = [], _Ready(), 0
    for end in range(1, len(sql) + 1):
        state = state.step(sql[end - 1], sql[start:end])
        if state is None:
            statements.append(sql[start:end])
            state, start = _Ready(), end
    if start < len(sql):
        statements.append(sql[start:])
    return statements


def split_statements(sql: str) -> list[str]:
    """The statements as the CLI stores them: trailing `;` and surrounding white space off,
    empty ones dropped."""
    trimmed = (s.rstrip(";").strip() for s in split(sql))
    return [s for s in trimmed if s]


# --- the history table ---------------------------------------------------------------------


def has_history(conn: psycopg.Connection) -> bool:
    return (
        conn.execute("SELECT to_regclass('supabase_migrations.schema_migrations')").fetchone()[0]
        is not None
    )


def ensure_history(conn: psycopg.Connection) -> None:
    """The history table as the CLI creates it when missing (schema, table, later columns)."""
    conn.execute(sql_text(SUPABASE_SQL / "create_history.sql").encode())


def record_applied(conn: psycopg.Connection, migration: SupabaseMigration) -> None:
    """The row `supabase db push` writes, in whatever transaction conn is in."""
    conn.execute(
        sql_text(SUPABASE_SQL / "insert_version.sql").encode(),
        {"version": migration.version, "name": migration.name,
         "statements": migration.statements},
    )  # fmt: skip


def record_reverted(conn: psycopg.Connection, version: str) -> int:
    """What `supabase migration repair --status reverted <version>` does; rows deleted."""
    return conn.execute(
        "DELETE FROM supabase_migrations.schema_migrations WHERE version = %s", (version,)
    ).rowcount


def history(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """The CLI's rows, oldest version first; [] without its table (reads only)."""
    if not has_history(conn):
        return []
    rows = conn.execute(sql_text(SUPABASE_SQL / "history.sql").encode()).fetchall()
    return [{"version": v, "name": n, "statements": s} for v, n, s in rows]


def sync(conn: psycopg.Connection, migration: SupabaseMigration, direction: str, mode: str) -> str:
    """The CLI's history in step with a change, inside the change's own transaction: the up
    writes the CLI's row, the down deletes it (what `migration repair --status reverted`
    does). `mode`: auto (only where the table exists), create (make it as the CLI would),
    off. Says what it did, for the ledger."""
    if mode == "off":
        return "supabase history: off"
    exists = has_history(conn)
    if direction == "up":
        if not exists and mode != "create":
            return "supabase history: none here"
        if not exists:
            ensure_history(conn)
        record_applied(conn, migration)
        return f"supabase history: {migration.version} recorded"
    if not exists:
        return "supabase history: none here"
    gone = record_reverted(conn, migration.version)
    return f"supabase history: {migration.version} {'removed' if gone else 'was not listed'}"


def listed(conn: psycopg.Connection, version: str) -> bool:
    """Whether the CLI's history lists the version (False without its table)."""
    return any(row["version"] == version for row in history(conn))

"""The statement and idle-in-transaction bounds a step sets for itself, whatever the role's.

Managed services set defaults on the migration role (`ALTER ROLE … SET statement_timeout =
'30s', idle_in_transaction_session_timeout = '10s'`), and every session of the role starts with
them. A lock phase that builds an exclusion constraint for longer than the role's default would
be cut half-way; so each step's transaction sets, with `set_config(…, true)` (transaction-scoped:
safe behind a transaction pooler, where a session SET would leak to the next client), the bounds
it needs, and says so. Whatever cuts a transaction, PostgreSQL rolls all of it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

# The longest the client may sit between two statements of a step's transaction (an export
# written to the artifacts, the ledger's row being prepared). Short, because a lock phase holds
# ACCESS EXCLUSIVE meanwhile: a client that hangs must not keep the application waiting long.
IDLE_IN_TRANSACTION_S = 60.0
# The online apply's build works on the copy (no lock on the live table): its bound catches a
# runaway, not a slow build (1M allocations built in 25-56 s here).
ONLINE_BUILD_TIMEOUT_S = 4 * 3600.0

NAMES = ("statement_timeout", "idle_in_transaction_session_timeout")


def _seconds_text(seconds: float | None) -> str:
    return "none (no limit)" if seconds is None else f"{seconds:g} s"


@dataclass(frozen=True)
class RoleTimeouts:
    """What a session of the role starts with (0 in PostgreSQL: no limit, here None)."""

    statement_timeout_s: float | None
    idle_in_transaction_s: float | None

    @classmethod
    def read(cls, conn: psycopg.Connection) -> RoleTimeouts:
        """The session's values: read before the step sets anything, they are the role's
        defaults (or the database's, or the DSN's options: whatever a session would get)."""
        rows = dict(
            conn.execute(
                "SELECT name, setting::float / 1000 FROM pg_settings WHERE name = ANY(%s)",
                (list(NAMES),),
            ).fetchall()
        )
        return cls(
            rows.get("statement_timeout") or None,
            rows.get("idle_in_transaction_session_timeout") or None,
        )

    def cuts(self, seconds: float) -> bool:
        """Whether a statement running this long would be cut by the role's default."""
        return self.statement_timeout_s is not None and seconds >= self.statement_timeout_s

    def to_json(self) -> dict[str, float | None]:
        return {"statement_timeout_s": self.statement_timeout_s,
                "idle_in_transaction_s": self.idle_in_transaction_s}  # fmt: skip


@dataclass(frozen=True)
class Bounds:
    """What a step sets in each of its transactions."""

    statement_timeout_s: float
    idle_in_transaction_s: float = IDLE_IN_TRANSACTION_S

    def settings(self) -> dict[str, str]:
        """For with_lock_retries' `settings` (set_config(…, true) in each attempt)."""
        return {
            "statement_timeout": f"{round(self.statement_timeout_s * 1000)}ms",
            "idle_in_transaction_session_timeout": f"{round(self.idle_in_transaction_s * 1000)}ms",
        }

    def describe(self, role: RoleTimeouts, what: str, basis: str) -> str:
        """e.g. "statement_timeout 900 s for the lock phase, 3x the lock budget 300 s (the
        role's default 30 s would cut it); idle_in_transaction_session_timeout 60 s (the
        role's default: 10 s)"."""
        role_statement = role.statement_timeout_s
        if role_statement is None:
            why = "the role sets none"
        elif role_statement < self.statement_timeout_s:
            why = f"the role's default {role_statement:g} s would cut it"
        else:
            why = f"the role's default is {role_statement:g} s"
        return (
            f"statement_timeout {self.statement_timeout_s:g} s for {what}, {basis} ({why}); "
            f"idle_in_transaction_session_timeout {self.idle_in_transaction_s:g} s (the role's "
            f"default: {_seconds_text(role.idle_in_transaction_s)})"
        )


def set_local(conn: psycopg.Connection, settings: Mapping[str, str]) -> None:
    """Each setting for the current transaction only."""
    for name, value in settings.items():
        conn.execute("SELECT set_config(%s, %s, true)", (name, value))

"""What a migration itself did to rows, known inside its own transaction.

On a live production the application writes during every step, so row counts taken before the
apply prove nothing after it. PostgreSQL counts the current transaction's own inserted, updated
and deleted tuples per table (`pg_stat_get_xact_tuples_*`); read at the start of the apply's
transaction and again before its COMMIT, the difference is exactly what the migration did, and
nothing the application did meanwhile (other transactions are not counted). Compared with what
the bundle's manifest allows, a migration that loses or changes rows it should not is refused
before it commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from rollout.manifest import RowRules
from rollout.paths import CATALOG_DIR, sql_text

KINDS = ("insert", "update", "delete")
_PAST = {"insert": "inserted", "update": "updated", "delete": "deleted"}


def read_counters(conn: psycopg.Connection) -> dict[str, tuple[int, int, int]]:
    """table -> (inserted, updated, deleted) tuples counted for this backend's transaction."""
    rows = conn.execute(sql_text(CATALOG_DIR / "transaction_row_effects.sql").encode())
    return {name: (ins, upd, dele) for name, ins, upd, dele in rows.fetchall()}


@dataclass
class RowEffects:
    """What one transaction did to the rows of the tables that existed when it started."""

    changed: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> kind -> rows
    dropped: list[str] = field(default_factory=list)  # tables gone, rows with them

    @classmethod
    def between(
        cls, before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]]
    ) -> RowEffects:
        effects = cls()
        for table, counts in before.items():
            if table not in after:
                effects.dropped.append(table)
                continue
            delta = {k: a - b for k, a, b in zip(KINDS, after[table], counts, strict=True)}
            if any(delta.values()):
                effects.changed[table] = {k: n for k, n in delta.items() if n}
        return effects

    def violations(self, rules: RowRules, script: str) -> list[str]:
        """What the script did that its manifest does not allow, one line each."""
        found = [
            f"{script} {_PAST[kind]} {rows:,} row(s) of {table}"
            for table, kinds in sorted(self.changed.items())
            for kind, rows in kinds.items()
            if not rules.allows(kind, table)
        ]
        found += [
            f"{script} dropped {table} with its rows"
            for table in sorted(self.dropped)
            if table not in rules.export
        ]
        return found

    def describe(self) -> str:
        parts = [
            f"{table}: " + ", ".join(f"{n:,} {_PAST[k]}" for k, n in kinds.items())
            for table, kinds in sorted(self.changed.items())
        ]
        parts += [f"{table}: dropped" for table in sorted(self.dropped)]
        return "; ".join(parts) if parts else "no row of an existing table changed"

    def to_json(self) -> dict[str, Any]:
        return {"changed": self.changed, "dropped": self.dropped}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RowEffects | None:
        if data is None:
            return None
        return cls(changed=dict(data.get("changed", {})), dropped=list(data.get("dropped", [])))

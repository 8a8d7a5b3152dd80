"""The lock trace: what each statement of a script locked, and for how long it ran, measured in
the real apply on staging and sized for production.

The runner (rollout.migrations.run_script) runs the script statement by statement inside its
one transaction and, between statements, reads this backend's own relation locks from pg_locks
(one query on the same connection). PostgreSQL keeps every lock to COMMIT, so a statement's
locks are those first seen after it: each is held from that statement to COMMIT. A statement
that re-takes a lock the transaction already holds adds no row to pg_locks; its tables are then
the locked tables its text names. Each statement's time is scaled to production by the rows of
the pre-existing tables it touched (rollout.locktime's linear model, per statement).

The trace is kept as `staging/lock-trace.json`, told on the gate and on the review page, and
read by validate_staging (the manifest's lock_tables against what was measured) and by
apply_mode auto (the longest predicted ACCESS EXCLUSIVE hold).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from rollout.locktime import predict_lock_seconds
from rollout.paths import SQL_DIR, sql_text
from rollout.supabase import split_statements

LOCKTRACE_SQL = SQL_DIR / "locktrace"
TRACE_NAME = "lock-trace.json"
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
# Modes that conflict with ROW EXCLUSIVE (what INSERT/UPDATE/DELETE take): writers wait.
_BLOCKS_WRITERS = {"SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", ACCESS_EXCLUSIVE}
_TABLE_KINDS = {"r", "p", "m"}
# The table lock modes, weakest first.
_STRENGTH = ["ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE",
             "SHARE ROW EXCLUSIVE", "EXCLUSIVE", ACCESS_EXCLUSIVE]  # fmt: skip
_COMMENT_LINE = re.compile(r"^\s*--.*$", re.MULTILINE)


def mode_name(pg_mode: str) -> str:
    """pg_locks' `AccessExclusiveLock` as the documentation writes it: `ACCESS EXCLUSIVE`."""
    words = re.findall(r"[A-Z][a-z]*", pg_mode.removesuffix("Lock"))
    return " ".join(words).upper()


def blocks_writers(mode: str) -> bool:
    return mode in _BLOCKS_WRITERS


_ALTER_TABLE = re.compile(
    r"^(ALTER\s+TABLE(?:\s+IF\s+EXISTS)?(?:\s+ONLY)?\s+[\w.\"$]+)\s+(.*)$",
    re.IGNORECASE | re.DOTALL,
)


def statement_label(statement: str, width: int = 72) -> str:
    """The statement's first words without its comments, on one line, cut at `width`. An
    ALTER TABLE of several actions names each (`ALTER TABLE t DROP CONSTRAINT a, ADD
    CONSTRAINT b EXCLUDE …`): the one that holds the lock may be the last."""
    text = " ".join(_COMMENT_LINE.sub("", statement).split())
    altering = _ALTER_TABLE.match(text)
    actions = _top_level_split(altering.group(2)) if altering else []
    if len(actions) > 1:
        heads = []
        for action in actions:
            words = re.sub(r"\bIF\s+(NOT\s+)?EXISTS\s+", "", action, flags=re.IGNORECASE).split()
            heads.append(" ".join(words[:4]) + (" …" if len(words) > 4 else ""))
        text, width = f"{altering.group(1)} {', '.join(heads)}", width * 3
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _top_level_split(text: str) -> list[str]:
    """Split at commas outside parentheses and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for at, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:at].strip())
            start = at + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def script_statements(script: str) -> list[str]:
    """The script's statements as the project's splitter (Supabase CLI's) cuts them; a piece
    that is only comments is no statement."""
    return [s for s in split_statements(script) if _COMMENT_LINE.sub("", s).strip()]


@dataclass
class LockTrace:
    """One attempt's statements, their new locks and times; `reset()` at each attempt (an
    attempt re-runs the whole transaction). `staging_rows` and `production_rows`: exact row
    counts by table name ("allocations" or "public.allocations"), taken at preflight; a table
    they lack counts by the planner's estimate (staging) or is not predicted (production)."""

    staging_rows: Mapping[str, int] = field(default_factory=dict)
    production_rows: Mapping[str, int] = field(default_factory=dict)
    statements: list[dict[str, Any]] = field(default_factory=list)
    attempt: int = 0
    _existing: set[int] = field(default_factory=set)
    _held: set[tuple[int, str]] = field(default_factory=set)
    _estimates: dict[str, int] = field(default_factory=dict)

    def reset(self, conn: psycopg.Connection, attempt: int) -> None:
        """A new attempt: forget the last one's statements; note which relations exist."""
        self.attempt, self.statements = attempt, []
        self._held, self._estimates = set(), {}
        query = sql_text(LOCKTRACE_SQL / "existing_relations.sql")
        self._existing = {oid for (oid,) in conn.execute(query.encode()).fetchall()}

    def run_script(self, conn: psycopg.Connection, script: str, phase: str) -> None:
        """Each statement of `script` on conn (in its transaction), traced."""
        for statement in script_statements(script):
            self.run(conn, statement, phase, lambda c, s=statement: c.execute(s.encode()))

    def run(self, conn: psycopg.Connection, text: str, phase: str, action: Any) -> Any:
        """`action(conn)` traced as one statement, `text` saying what it is."""
        started = time.perf_counter()
        result = action(conn)
        seconds = time.perf_counter() - started
        self._record(conn, text, phase, seconds)
        return result

    def _record(self, conn: psycopg.Connection, text: str, phase: str, seconds: float) -> None:
        rows = conn.execute(sql_text(LOCKTRACE_SQL / "own_locks.sql").encode()).fetchall()
        new_locks, tables = [], set()
        for oid, relation, relkind, pg_mode, table, table_oid, reltuples in rows:
            self._estimates[table] = max(int(reltuples), 0)
            if (oid, pg_mode) in self._held:
                continue
            self._held.add((oid, pg_mode))
            existing = oid in self._existing
            new_locks.append(
                {"relation": relation, "kind": relkind, "mode": mode_name(pg_mode),
                 "table": table, "existing": existing}
            )  # fmt: skip
            if table_oid in self._existing:
                tables.add(table)
        held_tables = {table for *_, table, t_oid, _ in rows if t_oid in self._existing}
        tables |= {t for t in held_tables if _names(text, t)}
        # What the transaction holds on each table the statement touched, by then: the
        # strongest mode on the table itself (a lock taken earlier counts: it is kept).
        holding = {}
        for table in sorted(tables):
            modes = [
                mode_name(m)
                for _, rel, kind, m, *_ in rows
                if rel == table and kind in _TABLE_KINDS
            ]
            if modes:
                holding[table] = max(modes, key=_STRENGTH.index)
        self.statements.append(
            {"n": len(self.statements) + 1, "phase": phase, "sql": text.strip(),
             "label": statement_label(text), "seconds": round(seconds, 4),
             "locks": new_locks, "tables": sorted(tables), "holding": holding}
        )  # fmt: skip

    def to_json(self, target: str, mode: str) -> dict[str, Any]:
        """The trace with each statement's rows and production prediction, and the holds."""
        statements = []
        for entry in self.statements:
            staging = {t: self._rows(self.staging_rows, t, self._estimates.get(t, 0))
                       for t in entry["tables"]}  # fmt: skip
            production = {t: self._rows(self.production_rows, t, None) for t in entry["tables"]}
            staging_total = sum(staging.values())
            known = [v for v in production.values() if v is not None]
            predicted = None
            if len(known) == len(production):
                predicted = (
                    predict_lock_seconds(entry["seconds"], staging_total, sum(known))
                    if staging_total > 0
                    else entry["seconds"]  # no rows to scale by: it takes what it took
                )
            statements.append(
                {**entry, "staging_rows": staging, "production_rows": production,
                 "predicted_s": None if predicted is None else round(predicted, 4)}
            )  # fmt: skip
        return {"target": target, "apply_mode": mode, "attempt": self.attempt,
                "statements": statements, "holds": holds(statements)}  # fmt: skip

    @staticmethod
    def _rows(counts: Mapping[str, int], table: str, default: int | None) -> int | None:
        bare = table.split(".", 1)[-1]
        if table in counts:
            return int(counts[table])
        if table.startswith("public.") and bare in counts:
            return int(counts[bare])
        return default


# Statements whose target table follows their first words: one that re-takes a lock the
# transaction already holds (no new pg_locks row) touched the table it names there.
_TARGETS = (
    r"^\s*(?:ALTER\s+TABLE(?:\s+IF\s+EXISTS)?(?:\s+ONLY)?|UPDATE(?:\s+ONLY)?|"
    r"DELETE\s+FROM(?:\s+ONLY)?|INSERT\s+INTO|TRUNCATE(?:\s+TABLE)?(?:\s+ONLY)?|"
    r"LOCK(?:\s+TABLE)?(?:\s+ONLY)?|CLUSTER|VACUUM(?:\s+\w+)*?|REINDEX\s+TABLE)\s+"
)


def _names(text: str, table: str) -> bool:
    """Whether the statement is one on this table (qualified, or bare in public)."""
    schema, name = table.split(".", 1)
    names = rf"{re.escape(schema)}\s*\.\s*{re.escape(name)}"
    if schema == "public":
        names = rf"(?:{names}|{re.escape(name)})"
    pattern = _TARGETS + names + r"(?![\w.$])"
    return re.search(pattern, _COMMENT_LINE.sub("", text), re.IGNORECASE) is not None


def holds(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each writer-blocking lock on a pre-existing table, from the statement that first took it
    to COMMIT: how long it was held on staging and predicted for production (the sum of the
    statements from there on)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for at, entry in enumerate(statements):
        for lock in entry["locks"]:
            key = (lock["relation"], lock["mode"])
            if not lock["existing"] or lock["kind"] not in _TABLE_KINDS or key in found:
                continue
            if not blocks_writers(lock["mode"]):
                continue
            rest = statements[at:]
            predicted = [s["predicted_s"] for s in rest]
            found[key] = {
                "table": lock["relation"], "mode": lock["mode"], "from_statement": entry["n"],
                "label": entry["label"], "staging_s": round(sum(s["seconds"] for s in rest), 4),
                "predicted_s": None if None in predicted else round(sum(predicted), 4),
                "blocks_readers": lock["mode"] == ACCESS_EXCLUSIVE,
            }  # fmt: skip
    return list(found.values())


def read_trace(folder: Any) -> dict[str, Any] | None:
    """The trace kept in a target's artifacts folder (an ArtifactDir), or None."""
    path = folder.path(TRACE_NAME)
    return json.loads(path.read_text()) if path.exists() else None


def fully_predicted(trace: Mapping[str, Any]) -> bool:
    """Whether every statement has a production prediction (production's row counts were
    known for each table it touched): only then may a decision rest on the trace alone."""
    return all(entry["predicted_s"] is not None for entry in trace.get("statements", []))


def longest_exclusive_hold(trace: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ACCESS EXCLUSIVE hold on a pre-existing table with the longest predicted production
    time (what apply_mode auto decides on), or None when the script takes none."""
    exclusive = [
        h for h in trace.get("holds", [])
        if h["mode"] == ACCESS_EXCLUSIVE and h["predicted_s"] is not None
    ]  # fmt: skip
    return max(exclusive, key=lambda h: h["predicted_s"], default=None)


def unnamed_exclusive_locks(trace: Mapping[str, Any], lock_tables: tuple[str, ...]) -> list[str]:
    """Each ACCESS EXCLUSIVE the trace measured on a pre-existing table the manifest's
    lock_tables does not name, said with the statement that took it."""
    problems = []
    for entry in trace.get("statements", []):
        for lock in entry["locks"]:
            if (
                lock["mode"] == ACCESS_EXCLUSIVE and lock["existing"]
                and lock["kind"] in _TABLE_KINDS and lock["relation"] not in lock_tables
            ):  # fmt: skip
                problems.append(
                    f"statement {entry['n']} `{entry['label']}` takes ACCESS EXCLUSIVE on "
                    f"{lock['relation']}"
                )
    return problems


def _seconds(value: float | None) -> str:
    """2 decimals below 10 s (a short lock is still told apart from none), else 1."""
    if value is None:
        return "unknown (no production row count)"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def gate_lines(trace: Mapping[str, Any]) -> list[str]:
    """The trace for the approval (Markdown): each statement that ran holding a lock that makes
    writers wait on an existing table it touched: the lock, since when, its time on staging
    and predicted on production."""
    lines = []
    for entry in trace.get("statements", []):
        first = {lock["relation"]: lock["mode"] for lock in entry["locks"]}
        for table, mode in entry.get("holding", {}).items():
            if not blocks_writers(mode):
                continue
            since = "from here to COMMIT" if first.get(table) == mode else "held to COMMIT"
            staging_rows = entry["staging_rows"].get(table)
            production_rows = entry["production_rows"].get(table)
            on_rows = "" if staging_rows is None else f" on staging's {staging_rows:,} rows"
            predicted = entry["predicted_s"]
            to_production = (
                f"predicted {_seconds(predicted)} on production's {production_rows:,}"
                if predicted is not None and production_rows is not None
                else "not predicted (no production row count)"
            )
            who = "readers and writers wait" if mode == ACCESS_EXCLUSIVE else "writers wait"
            lines.append(
                f"  - `{entry['label']}`: {mode} on {table} {since}; "
                f"{_seconds(entry['seconds'])}{on_rows}, {to_production}; {who} behind it"
            )
    if not lines:
        return ["- Locks, statement by statement (measured on staging): none makes writers wait"]
    longest = longest_exclusive_hold(trace)
    head = "- Locks, statement by statement (measured on staging, staging/lock-trace.json)"
    if longest is not None:
        head += (
            f"; the longest ACCESS EXCLUSIVE hold: {longest['table']} from statement "
            f"{longest['from_statement']}, {_seconds(longest['staging_s'])} on staging, predicted "
            f"{_seconds(longest['predicted_s'])} on production"
        )
    return [f"{head}:", *lines]

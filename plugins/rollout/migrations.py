"""Migration bundles: ``sql/migrations/<version>_<name>/`` with up.sql, down.sql and checks/.

Each script is one transaction written as ``BEGIN; … COMMIT;`` so it is safe however it is
applied (``psql -f`` included). The runner executes the body between them inside its own
transaction, so that later steps (the ledger row) can join the same transaction.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from rollout.db import run_sql_file
from rollout.errors import BundleError, RollbackRefused, RolloutError
from rollout.lock_retries import LockRetries, with_lock_retries
from rollout.manifest import Manifest, load_manifest
from rollout.paths import MIGRATIONS_DIR, PROJECT_ROOT, SQL_DIR, sql_text
from rollout.row_effects import RowEffects, read_counters

if TYPE_CHECKING:
    from rollout.locktrace import LockTrace

_BUNDLE_DIR = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)$")
LOCKS_SQL = SQL_DIR / "locks"
MAX_HOLDERS_LOGGED = 40  # lines of pg_locks an attempt that gave way logs
_WRAPPED = re.compile(r"^\s*BEGIN;\s*$(?P<body>.*)^\s*COMMIT;\s*\Z", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class MigrationBundle:
    version: str
    name: str
    path: Path

    @property
    def up_path(self) -> Path:
        return self.path / "up.sql"

    @property
    def down_path(self) -> Path:
        return self.path / "down.sql"

    def check_path(self, name: str) -> Path:
        return self.path / "checks" / f"{name}.sql"

    @cached_property
    def manifest(self) -> Manifest:
        return load_manifest(self.path)

    @property
    def expectations_key(self) -> str:
        """The folder under expectations/ with this bundle's suites."""
        return self.manifest.expectations or self.version

    @property
    def expectations_dir(self) -> Path:
        """This bundle's expectation suites: its own `expectations/` folder when it has one,
        else the folder under the project's expectations/ its manifest (or version) names."""
        own = self.path / "expectations"
        return own if own.is_dir() else PROJECT_ROOT / "expectations" / self.expectations_key

    @property
    def supabase_migration(self):
        """(version, name, statements) for the Supabase CLI's history: the CLI file the bundle
        came from (manifest [supabase]) or, for a bundle written here, up.sql as the CLI would
        split it."""
        from rollout.supabase import SupabaseMigration, split_statements

        own = self.manifest.supabase
        if own is not None:
            return SupabaseMigration(
                own.version, own.name, split_statements(sql_text(self.path / own.source))
            )
        return SupabaseMigration(self.version, self.name, split_statements(sql_text(self.up_path)))

    @cached_property
    def checksum(self) -> str:
        """sha256 over every file of the bundle (path and content), in name order."""
        return checksum_of(read_files(self.path))

    def body(self, direction: str) -> str:
        """The statements of up.sql or down.sql without their BEGIN/COMMIT wrapper."""
        path = {"up": self.up_path, "down": self.down_path}[direction]
        match = _WRAPPED.match(_strip_leading_comments(sql_text(path)))
        if not match:
            raise BundleError(
                f"{path} must be one transaction: its first statement `BEGIN;` and its last "
                "`COMMIT;`, each on a line of its own"
            )
        return match.group("body")


def read_files(folder: Path) -> dict[str, bytes]:
    """Every file of a bundle folder, read once: {relative path: bytes}, in name order."""
    return {
        file.relative_to(folder).as_posix(): file.read_bytes()
        for file in sorted(p for p in folder.rglob("*") if p.is_file())
    }


def checksum_of(files: dict[str, bytes]) -> str:
    """A bundle's checksum from its files as read_files orders them (the order every ledger's
    checksum was taken in): sha256 over each path and content."""
    digest = hashlib.sha256()
    for name, data in files.items():
        digest.update(name.encode() + b"\0")
        digest.update(data + b"\0")
    return digest.hexdigest()


def _strip_leading_comments(text: str) -> str:
    lines = text.splitlines(keepends=True)
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    return "".join(lines)


def discover_bundles(directory: Path | None = None) -> list[MigrationBundle]:
    """Every bundle folder (of MIGRATIONS_DIR by default), oldest version first."""
    directory = directory or MIGRATIONS_DIR
    bundles = []
    for path in sorted(p for p in directory.iterdir() if p.is_dir()):
        match = _BUNDLE_DIR.match(path.name)
        if not match:
            raise BundleError(f"{path.name}: bundle folders are named <14-digit version>_<name>")
        for required in ("up.sql", "down.sql"):
            if not (path / required).is_file():
                raise BundleError(f"bundle {path.name} has no {required}")
        bundles.append(MigrationBundle(match["version"], match["name"], path))
    return bundles


def load_bundle(version: str | None = None, directory: Path | None = None) -> MigrationBundle:
    """The bundle of that version, or the newest when version is None."""
    directory = directory or MIGRATIONS_DIR
    bundles = discover_bundles(directory)
    if not bundles:
        raise BundleError(f"no migration bundles under {directory}")
    if version is None:
        return bundles[-1]
    for bundle in bundles:
        if bundle.version == version:
            return bundle
    known = ", ".join(b.version for b in bundles)
    raise BundleError(f"no migration bundle with version {version!r}; known: {known}")


# A script marks where its long lock begins with a line starting like this; from there to
# COMMIT is the lock phase that apply_* times (up.sql and down.sql both have one).
LOCK_PHASE_MARKER = "-- From here to COMMIT,"


@dataclass(frozen=True)
class ApplyResult:
    version: str
    direction: str
    seconds: float  # the whole transaction, from its attempt's start to after COMMIT
    lock_seconds: float  # from the marked lock phase to COMMIT: what other sessions wait for
    attempts: int = 1
    effects: RowEffects | None = None  # what the script did to existing rows
    exported: dict[str, int] = field(default_factory=dict)  # table -> rows exported and dropped
    online: dict | None = None  # the online apply's phases and figures (rollout.online), if online


@dataclass(frozen=True)
class ScriptRun:
    """What the runner knows inside the script's transaction, before COMMIT (for the ledger)."""

    attempt: int
    seconds: float
    lock_seconds: float
    effects: RowEffects
    exported: dict[str, int]


# Called inside the script's transaction, after it ran and passed its manifest, before COMMIT:
# the ledger row is written there, in the same transaction as the change.
BeforeCommit = Callable[[psycopg.Connection, ScriptRun], None]
# Given each exported table's rows as CSV (with a header) inside the down's transaction, before
# the drop; it keeps them (an artifact) or raises to stop the down.
KeepExport = Callable[[str, bytes, int], None]


# Runs in place of the script's lock phase, in its transaction, after the statements before it
# (the online apply's swap). What it does to rows is the engine's own copying, not the script's.
LockPhase = Callable[[psycopg.Connection], None]


class RowRulesBroken(RolloutError):
    """The script did to existing rows what its bundle's manifest does not allow; rolled back."""


def split_lock_phase(body: str) -> tuple[str, str]:
    """(statements before the lock phase, the lock phase); all of it when there is no marker."""
    at = body.find(LOCK_PHASE_MARKER)
    return ("", body) if at < 0 else (body[:at], body[at:])


def run_script(
    conn: psycopg.Connection,
    bundle: MigrationBundle,
    direction: str,
    *,
    retries: LockRetries | None = None,
    settings: dict[str, str] | None = None,
    say: Callable[[str], None] = lambda _message: None,
    before_commit: BeforeCommit | None = None,
    keep_export: KeepExport | None = None,
    lock_phase: LockPhase | None = None,
    lock_first: LockPhase | None = None,
    sleep: Callable[[float], None] = time.sleep,
    trace: LockTrace | None = None,
) -> ApplyResult:
    """Run up.sql's or down.sql's body in one transaction on conn, under the one lock-retry
    mechanism (each attempt a transaction of its own); time it and its lock phase.

    `lock_phase`, when given, runs instead of the script's own lock phase (the online apply's
    swap); row effects are then counted up to it. `lock_first` takes locks before anything
    else in the attempt (the lock phase is then timed from it). `sleep` is what happens
    between attempts. `trace`, when given, runs the script statement by statement in the same
    transaction and records each one's new locks and time (rollout.locktrace); each attempt
    starts it afresh.

    Inside the transaction: when the script drops tables with their rows (the manifest's
    export), its lock tables are locked first and those tables exported (their rows counted,
    and the count checked again at the drop); the script runs; and what it did to existing rows
    is compared with its manifest: anything it may not do rolls it all back (RowRulesBroken).
    The down's own refusal (SQLSTATE RB001) becomes RollbackRefused."""
    rules = bundle.manifest.rules(direction)
    before_lock, script_lock_phase = split_lock_phase(bundle.body(direction))
    script = f"{direction}.sql of {bundle.version}"
    stamps: dict[str, float] = {}
    waiting: dict = {"for": "", "tables": ()}  # what the attempt is asking for, for the log

    def attempt(conn: psycopg.Connection, number: int) -> ScriptRun:
        stamps["started"] = time.perf_counter()
        stamps.pop("lock", None)
        if trace is not None:
            trace.reset(conn, number)

        def step(what: str, action: Callable[[psycopg.Connection], Any]) -> Any:
            """One of the runner's own statements, traced as such when tracing."""
            if trace is None:
                return action(conn)
            return trace.run(conn, what, "runner", action)

        def run_text(text: str, phase: str) -> None:
            if trace is None:
                conn.execute(text.encode())
            else:
                trace.run_script(conn, text, phase)

        locking = f"LOCK TABLE {', '.join(bundle.manifest.lock_tables)} IN ACCESS EXCLUSIVE MODE"
        if lock_first is not None:
            stamps["lock"] = stamps["started"]
            waiting["for"] = "the online swap's locks"
            step("the online swap's locks", lock_first)
        elif rules.export:
            # Everything the script's statements will lock, taken first in the application's
            # order: a writer half-way through a booking is waited for, never deadlocked with.
            stamps["lock"] = stamps["started"]
            order = script_lock_order(conn, bundle, direction)
            step(
                f"LOCK TABLE {', '.join(order)} IN ACCESS EXCLUSIVE MODE",
                lambda c: _lock_tables(c, order, waiting),
            )
        counters = read_counters(conn)
        exported = (
            step(
                f"export {', '.join(rules.export)}", lambda c: _export(c, rules.export, keep_export)
            )
            if rules.export
            else {}
        )
        if before_lock.strip():
            waiting["for"] = f"{script}'s statements before its lock phase"
            run_text(before_lock, "before the lock phase")
        if lock_phase is None:
            stamps.setdefault("lock", time.perf_counter())
            if bundle.manifest.lock_tables:
                step(locking, lambda c: _lock_tables(c, bundle.manifest.lock_tables, waiting))
            waiting["for"] = f"{script}'s lock phase"
            run_text(script_lock_phase, "lock phase")
            effects = RowEffects.between(counters, read_counters(conn))
        else:
            effects = RowEffects.between(counters, read_counters(conn))
            stamps.setdefault("lock", time.perf_counter())
            waiting["for"] = "the online swap"
            step("the online swap", lock_phase)
        broken = effects.violations(rules, f"{direction}.sql")
        if broken:
            raise RowRulesBroken(
                f"{'; '.join(broken)}, which the bundle's manifest.toml does not allow "
                f"({direction}: {rules.describe()}). The transaction rolled back: nothing "
                "changed. Fix the script, or declare the change in the manifest if it is meant"
            )
        now = time.perf_counter()
        done = ScriptRun(number, now - stamps["started"], now - stamps["lock"], effects, exported)
        if before_commit:
            before_commit(conn, done)
        return done

    def explain_lost(conn: psycopg.Connection, number: int) -> None:
        """Which lock the attempt gave way on, and who holds or awaits the tables it locks."""
        tables = sorted({*bundle.manifest.lock_tables, *rules.export, *waiting["tables"]})
        say(f"{script}: attempt {number} gave way waiting for {waiting['for']}")
        try:
            holders = lock_holders(conn, tables)
        except psycopg.Error as exc:  # the log's detail never hides the attempt's own outcome
            holders = [f"pg_locks could not be read ({str(exc).strip().splitlines()[0]})"]
        if len(holders) > MAX_HOLDERS_LOGGED:  # a busy production: enough to see who, not all
            more = len(holders) - MAX_HOLDERS_LOGGED
            holders = [*holders[:MAX_HOLDERS_LOGGED], f"and {more} more lock(s) on those tables"]
        for line in holders:
            say(f"{script}: attempt {number}: {line}")

    try:
        done = with_lock_retries(
            conn, attempt, retries or LockRetries(), what=script, say=say, settings=settings,
            sleep=sleep, on_lost=explain_lost,
        )  # fmt: skip
    except psycopg.Error as exc:
        if exc.sqlstate == RollbackRefused.sqlstate:
            diag = exc.diag
            raise RollbackRefused(
                f"{diag.message_primary}. {diag.message_hint or ''}".strip()
            ) from exc
        raise
    ended = time.perf_counter()  # after COMMIT: the lock is released
    return ApplyResult(
        bundle.version, direction, ended - stamps["started"], ended - stamps["lock"],
        done.attempt, done.effects, done.exported,
    )  # fmt: skip


def _lock_tables(conn: psycopg.Connection, tables: tuple[str, ...], waiting: dict) -> None:
    """ACCESS EXCLUSIVE on each table, in the order given (under the attempt's lock_timeout);
    a table already locked by this transaction is granted at once."""
    waiting["tables"] = tuple(dict.fromkeys((*waiting["tables"], *tables)))
    for table in tables:
        waiting["for"] = f"ACCESS EXCLUSIVE on {table}"
        conn.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.Identifier(*table.split("."))
            )
        )


def script_lock_order(
    conn: psycopg.Connection, bundle: MigrationBundle, direction: str
) -> tuple[str, ...]:
    """Every table the script's statements will lock ACCESS EXCLUSIVE, as the catalog stands:
    its lock phase's tables (manifest lock_tables), the tables it drops (export) and the tables
    their foreign keys link them to (a DROP TABLE locks those too, to drop the keys' triggers).
    In the application's order (manifest application_order), the others after it by name."""
    manifest = bundle.manifest
    dropped = manifest.rules(direction).export
    linked = [
        row[0]
        for row in conn.execute(
            sql_text(LOCKS_SQL / "foreign_key_neighbours.sql").encode(), {"tables": list(dropped)}
        )
    ]
    tables = {*manifest.lock_tables, *dropped, *linked}
    rank = {table: at for at, table in enumerate(manifest.application_order)}
    return tuple(sorted(tables, key=lambda t: (rank.get(t, len(rank)), t)))


def lock_holders(conn: psycopg.Connection, tables: list[str]) -> list[str]:
    """One line per other session holding or awaiting a lock on these tables: its pid and
    application_name, the table and mode, granted or waiting, whom it waits for, its
    transaction's age."""
    with conn.transaction():  # its own, ended here, whatever the connection's mode
        rows = conn.execute(
            sql_text(LOCKS_SQL / "lock_holders.sql").encode(), {"tables": tables}
        ).fetchall()
    return [
        f"pid {pid} ({name or 'no application_name'}) {'holds' if granted else 'awaits'} {mode} "
        f"on {table}"
        + (f", blocked by {blocked}" if blocked else "")
        + f", {state}, transaction open {xact_s} s"
        for pid, name, table, mode, granted, blocked, state, xact_s in rows
    ]


def _export(
    conn: psycopg.Connection, tables: tuple[str, ...], keep: KeepExport | None
) -> dict[str, int]:
    """Each table the down drops, locked and copied out in the down's own transaction: rows
    written meanwhile wait for the down, none is dropped unseen. ACCESS EXCLUSIVE at once, the
    lock the drop takes anyway: asking for less first and upgrading at the drop deadlocks with
    a writer queued in between."""
    exported = {}
    for table in tables:
        name = sql.Identifier(*table.split("."))
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
            continue  # nothing to export: the down will say what it thinks of that
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(name))
        copy_sql = sql.SQL("COPY {} TO STDOUT WITH (FORMAT csv, HEADER)").format(name)
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            lines = [bytes(row) for row in copy]  # libpq hands COPY out one row at a time
        data, copied = b"".join(lines), max(0, len(lines) - 1)  # less the header
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()[0]
        if copied != rows:
            raise RolloutError(
                f"export of {table}: {copied} rows copied but {rows} in the table; the down "
                "stopped before dropping it (nothing changed)"
            )
        if keep:
            keep(table, data, rows)
        exported[table] = rows
    return exported


def apply_up(
    conn: psycopg.Connection,
    bundle: MigrationBundle,
    *,
    retries: LockRetries | None = None,
    settings: dict[str, str] | None = None,
    before_commit: BeforeCommit | None = None,
) -> ApplyResult:
    """up.sql on conn, by itself (no ledger): the tests' and benchmarks' plain apply."""
    return run_script(
        conn, bundle, "up", retries=retries, settings=settings, before_commit=before_commit
    )


def apply_down(
    conn: psycopg.Connection,
    bundle: MigrationBundle,
    *,
    retries: LockRetries | None = None,
    settings: dict[str, str] | None = None,
    before_commit: BeforeCommit | None = None,
    keep_export: KeepExport | None = None,
) -> ApplyResult:
    """down.sql on conn, by itself (no ledger); RollbackRefused when its own check refuses."""
    return run_script(
        conn, bundle, "down", retries=retries, settings=settings, before_commit=before_commit,
        keep_export=keep_export,
    )  # fmt: skip


def preflight_problems(conn: psycopg.Connection, bundle: MigrationBundle) -> list[str]:
    """What the bundle's own preflight checks (manifest) find, one line each: the check's
    first comment line, then what it named."""
    problems = []
    for name in bundle.manifest.preflight_checks:
        path = bundle.path / name
        if not path.is_file():
            raise BundleError(f"bundle {bundle.path.name}: preflight check {name} is missing")
        text = sql_text(path)
        first = text.lstrip().splitlines()[0] if text.strip() else ""
        message = first.removeprefix("--").strip() if first.startswith("--") else name
        rows: list = []
        with conn.transaction():  # a check reads; whatever it did is rolled back anyway
            rows = conn.execute(text.encode()).fetchall()
            raise psycopg.Rollback()
        if rows:
            named = ", ".join(str(row[0]) for row in rows[:10])
            more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
            problems.append(f"{name}: {named}{more}: {message}")
    return problems


def run_check(conn: psycopg.Connection, bundle: MigrationBundle, name: str) -> None:
    """Run checks/<name>.sql (verify_up, verify_down); it raises when the state is wrong."""
    with conn.transaction():
        run_sql_file(conn, bundle.check_path(name))


def list_down_conflicts(conn: psycopg.Connection, bundle: MigrationBundle) -> list[dict]:
    """The rows that would make down.sql refuse, as the bundle's optional
    checks/down_conflicts.sql lists them (none when the bundle has no such check)."""
    check = bundle.check_path("down_conflicts")
    if not check.is_file():
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql_text(check).encode())
        return cur.fetchall()

"""The online apply: a bundle's lock phase built on a copy of its table while the application
writes, and the copy swapped in under a short lock.

Phases, each recorded in rollout.online_phase as it starts and ends:

1. prepare: what keeps the table from being moved (views, foreign keys pointing at it, …:
   refused, naming them), its size and the free disk space where it can be seen;
   leftovers of an earlier online apply are removed first.
2. rehearse: the lock phase on an empty copy, rolled back: the copy's new definition, or a
   refusal saying what cannot run online (rollout.online.definition).
3. capture: the empty copy (`rollout_shadow.<table>`: columns, checks, grants, policies,
   comments, primary key), the change log and its triggers on the live table.
4. backfill: the live table's rows copied in batches of blocks, each a short transaction.
5. catch-up: the logged changes replayed until the copy equals the live table in one snapshot.
6. build: the copy's other indexes and constraints (the new exclusion constraint among them),
   on a copy nobody else uses: no lock the application waits for.
7. catch-up again, the copy compared with the live table (rows and checksum), ANALYZE.
8. swap: one transaction under the lock retries: ACCESS EXCLUSIVE on the live table and the
   copy, the script's statements before its lock phase (the cache table, the new function),
   the last catch-up, foreign keys (NOT VALID), triggers and publications, the old table moved
   to `rollout_retired`, the copy moved into its place, the ledger row, COMMIT. Between
   attempts the catch-up goes on, so each attempt has little left to replay under the lock.
9. validate: the foreign keys validated (SHARE UPDATE EXCLUSIVE: writers go on).
10. retire: the old table, the log and the triggers' functions dropped.

Until the swap commits, the live table serves every read and write; a failure or a kill leaves
it serving with every write kept, and the next run (or `cleanup`) removes what was left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from rollout import ledger
from rollout.db import require_no_transaction
from rollout.errors import RollbackRefused, RolloutError
from rollout.lock_retries import LockNotGranted, LockRetries, with_lock_retries
from rollout.locktrace import LockTrace
from rollout.migrations import (
    ApplyResult,
    BeforeCommit,
    KeepExport,
    MigrationBundle,
    ScriptRun,
    run_script,
    split_lock_phase,
)
from rollout.online import capture
from rollout.online.definition import (
    AFTER_BACKFILL,
    IN_SWAP,
    ONLINE_SQL,
    RETIRED_SCHEMA,
    SHADOW_SCHEMA,
    Definition,
    OnlineRefused,
    build_empty_copy,
    pg_catalog_path,
    qualified,
    rehearse,
)
from rollout.paths import sql_text
from rollout.timeouts import ONLINE_BUILD_TIMEOUT_S, Bounds, RoleTimeouts, set_local

Say = Callable[[str], None]
OnPhase = Callable[[str], None]
# Free space wanted beyond a second copy of the table (its log, WAL, the build's sorts).
DISK_MARGIN = 1.2
ONLINE_LOCK_KEY = 0x524F4F4C  # "ROOL": one online apply per database (beside the rollout's own)


@dataclass(frozen=True)
class OnlineOptions:
    batch_rows: int = 20_000  # rows per backfill batch (one short transaction each)
    batch_pause_s: float = 0.0  # pause after each batch, to leave the CPU to the application
    swap_when_pending: int = 2_000  # catch up until a round takes fewer keys than this
    max_catch_up_rounds: int = 20  # before the swap; the swap's own retries catch up too
    verify: bool = True  # compare copy and table (rows, checksum) before the swap
    maintenance_work_mem: str = "256MB"  # for the copy's index builds (a user setting)


@dataclass(frozen=True)
class OnlinePlan:
    """What an online apply of a bundle would do here, read-only: for the approval text."""

    table: str
    total_bytes: int  # heap, TOAST and indexes: about what the copy needs again
    estimated_rows: int
    free_bytes: int | None  # where the server's data directory can be seen from here
    free_note: str
    problems: tuple[str, ...]  # what refuses it

    def describe(self) -> str:
        size = f"{self.table}: {_size(self.total_bytes)} with its indexes (~{self.estimated_rows:,} rows); the copy needs as much again"
        free = (
            f"{_size(self.free_bytes)} free on the server's data disk"
            if self.free_bytes is not None
            else f"free disk space not checked ({self.free_note})"
        )
        refused = f"; refused: {'; '.join(self.problems)}" if self.problems else ""
        return f"{size}; {free}{refused}"


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def online_table(bundle: MigrationBundle) -> str:
    spec = bundle.manifest.online
    if spec is None:
        raise OnlineRefused(
            f"bundle {bundle.path.name} does not allow an online apply: its manifest.toml has "
            'no [online] section naming the table its lock phase changes (table = "schema.'
            'table"). Apply it with apply_mode "locking"'
        )
    return spec.table


def plan_online(conn: psycopg.Connection, bundle: MigrationBundle) -> OnlinePlan:
    """Size, free space and refusals of an online apply of `bundle` here; changes nothing."""
    table = online_table(bundle)
    if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
        return OnlinePlan(table, 0, 0, None, "no such table", (f"{table} does not exist",))
    total, _heap, _blocks, rows = conn.execute(
        sql_text(ONLINE_SQL / "table_size.sql").encode(), {"table": table}
    ).fetchone()
    problems = tuple(
        r[0]
        for r in conn.execute(
            sql_text(ONLINE_SQL / "refusals.sql").encode(), {"table": table}
        ).fetchall()
    )
    free, note = free_disk_space(conn)
    if free is not None and free < total * DISK_MARGIN:
        problems += (
            f"the server's data disk has {_size(free)} free, less than {DISK_MARGIN:g} x the "
            f"{_size(total)} the copy needs",
        )
    return OnlinePlan(table, int(total), int(rows), free, note, problems)


def free_disk_space(conn: psycopg.Connection) -> tuple[int | None, str]:
    """Free bytes on the disk of the server's data directory, when this role may read where
    it is (superuser or pg_read_all_settings) and it is on this machine; else (None, why)."""
    try:
        with conn.transaction():
            path = conn.execute("SELECT current_setting('data_directory')").fetchone()[0]
    except psycopg.errors.InsufficientPrivilege:
        return None, (
            "this role may not read data_directory (needs superuser or pg_read_all_settings): "
            "check the server's disk yourself"
        )
    if not os.path.isdir(path):
        return None, "the server's data directory is not on this machine: check its disk yourself"
    return shutil.disk_usage(path).free, f"data directory {path}"


# --- the phase ledger ------------------------------------------------------------------------


class Progress:
    """One online operation's phases in rollout.online_phase, each row committed at once."""

    def __init__(
        self,
        conn: psycopg.Connection,
        bundle: MigrationBundle,
        direction: str,
        table: str,
        say: Say,
        on_phase: OnPhase,
    ) -> None:
        self.conn, self.bundle, self.direction, self.table = conn, bundle, direction, table
        self.say, self.on_phase = say, on_phase
        self.operation = uuid.uuid4()
        self.timings: dict[str, float] = {}
        self.rows: dict[str, int] = {}  # phase -> its row, the latest of that name

    @contextlib.contextmanager
    def phase(self, name: str, detail: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Record the phase as started, yield a dict to fill with its figures, record the end."""
        facts: dict[str, Any] = dict(detail or {})
        with self.conn.transaction():
            row = self.conn.execute(
                sql_text(ONLINE_SQL / "phase_start.sql").encode(),
                {"operation": self.operation, "version": self.bundle.version,
                 "direction": self.direction, "table": self.table, "phase": name,
                 "detail": json.dumps(facts, default=str)},
            ).fetchone()[0]  # fmt: skip
        self.rows[name] = row
        self.on_phase(name)
        started = time.perf_counter()
        status = "failed"
        try:
            yield facts
            status = "done"
        except BaseException as exc:
            facts["error"] = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started
            facts["seconds"] = round(time.perf_counter() - started, 3)
            with contextlib.suppress(psycopg.Error), self.conn.transaction():
                self.conn.execute(
                    sql_text(ONLINE_SQL / "phase_end.sql").encode(),
                    {"status": status, "detail": json.dumps(facts, default=str), "id": row},
                )

    def committed(self, conn: psycopg.Connection, name: str) -> None:
        """Mark phase `name` done in conn's transaction (the swap's own): done means committed."""
        conn.execute(sql_text(ONLINE_SQL / "phase_committed.sql").encode(), {"id": self.rows[name]})


def close_interrupted(conn: psycopg.Connection) -> list[str]:
    """Phases left `started` by a process that died, closed as failed (interrupted); which.
    Only under the online apply's lock, when no other online operation runs."""
    if conn.execute("SELECT to_regclass('rollout.online_phase') IS NULL").fetchone()[0]:
        return []
    with conn.transaction():
        closed = conn.execute(sql_text(ONLINE_SQL / "close_interrupted.sql").encode()).fetchall()
    return [f"{phase} of operation {operation}" for operation, phase in closed]


def phases(conn: psycopg.Connection, operation: uuid.UUID | None = None) -> list[dict]:
    """The recorded phases (of one operation, or all), oldest first."""
    if conn.execute("SELECT to_regclass('rollout.online_phase') IS NULL").fetchone()[0]:
        return []
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            sql_text(ONLINE_SQL / "phases.sql").encode(), {"operation": operation}
        ).fetchall()


# --- cleanup ---------------------------------------------------------------------------------


def leftovers(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """What an earlier online apply left behind: (kind, name) each."""
    return [
        (kind, name)
        for kind, name in conn.execute(
            sql_text(ONLINE_SQL / "leftovers.sql").encode(), {}
        ).fetchall()
    ]


def cleanup(
    conn: psycopg.Connection,
    *,
    retries: LockRetries | None = None,
    say: Say = lambda _message: None,
) -> list[str]:
    """Finish or undo what an earlier online apply left on this database; what was done.

    A swap that committed leaves at most its foreign keys to validate and the old table to
    drop: both are done. One that did not leaves the copy, the log and the triggers on the
    live table: all removed (the live table has every write; the triggers only logged keys).
    Safe to run any time no online apply is running (the rollout lock sees to that)."""
    require_no_transaction(conn, "online cleanup")
    with _one_at_a_time(conn):
        return _closed(conn, say) + _cleanup(conn, retries or LockRetries(), say)


def _closed(conn: psycopg.Connection, say: Say) -> list[str]:
    closed = close_interrupted(conn)
    if closed:
        say(f"online: phases interrupted by an earlier run's end, closed: {', '.join(closed)}")
    return [f"interrupted phases closed ({', '.join(closed)})"] if closed else []


def _cleanup(conn: psycopg.Connection, retries: LockRetries, say: Say) -> list[str]:
    done: list[str] = []
    done += _validate_pending(conn, retries, say)
    found = leftovers(conn)
    for table in dict.fromkeys(n.partition(" on ")[2] for k, n in found if k == "trigger"):
        if table:
            with_lock_retries(
                conn,
                lambda c, _n, t=table: capture.drop_triggers(c, sql.SQL(t)),
                retries,
                what=f"online cleanup: capture triggers on {table}",
                say=say,
            )
            done.append(f"capture triggers dropped from {table}")
    with conn.transaction():
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(qualified(*capture.LOG))
        )  # fmt: skip
        for function in (capture.CAPTURE_FUNCTION, capture.REFUSE_TRUNCATE):
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(qualified(*function)))
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SHADOW_SCHEMA))
        )
    if any(kind in ("table", "function") for kind, _ in found) or any(
        name == SHADOW_SCHEMA for _, name in found
    ):
        done.append("the copy, the change log and its functions dropped")
    for kind, name in found:
        if kind == "table" and name.startswith(f"{RETIRED_SCHEMA}."):
            _retire(conn, name, retries, say)
            done.append(f"the old table {name} dropped")
    with conn.transaction():
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {}").format(sql.Identifier(RETIRED_SCHEMA))
        )  # fmt: skip
    for line in done:
        say(f"online cleanup: {line}")
    return done


def _retire(conn: psycopg.Connection, table: str, retries: LockRetries, say: Say) -> None:
    """DROP the old table: its foreign keys' triggers on the tables they reference go with it
    (ACCESS EXCLUSIVE on those, for the catalog change only): under the lock retries."""
    with_lock_retries(
        conn,
        lambda c, _n: c.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(table))),
        retries,
        what=f"online: dropping the old table {table}",
        say=say,
    )


def _validate_pending(conn: psycopg.Connection, retries: LockRetries, say: Say) -> list[str]:
    """Foreign keys a committed swap added NOT VALID and no validation finished since."""
    done = []
    for row in phases(conn):
        # A swap killed after its COMMIT may not have recorded its end: its start names them.
        if row["phase"] != "swap" or not row["detail"]:
            continue
        table = row["detail"].get("table")
        for name in row["detail"].get("validate", []):
            still = conn.execute(
                sql_text(ONLINE_SQL / "unvalidated.sql").encode(), {"table": table, "name": name}
            ).fetchone()
            if still:
                _validate(conn, table, name, retries, say)
                done.append(f"foreign key {name} of {table} validated")
    return done


def _validate(conn: psycopg.Connection, table: str, name: str, retries: LockRetries, say: Say):
    schema, _, relname = table.partition(".")
    with_lock_retries(
        conn,
        lambda c, _n: c.execute(
            sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                qualified(schema, relname), sql.Identifier(name)
            )
        ),
        retries,
        what=f"online: validating foreign key {name} of {table}",
        say=say,
    )


# --- the apply -------------------------------------------------------------------------------


@dataclass
class _Run:
    """What one online apply has learnt so far."""

    table: str
    live: tuple[str, str]
    source: Definition | None = None
    target: Definition | None = None
    tables: capture.Tables | None = None
    figures: dict[str, Any] = field(default_factory=dict)


def apply_online(
    conn: psycopg.Connection,
    bundle: MigrationBundle,
    direction: str,
    *,
    retries: LockRetries | None = None,
    settings: dict[str, str] | None = None,
    say: Say = lambda _message: None,
    before_commit: BeforeCommit | None = None,
    keep_export: KeepExport | None = None,
    options: OnlineOptions | None = None,
    on_phase: OnPhase = lambda _phase: None,
    keep_going: Callable[[], None] = lambda: None,
    trace: LockTrace | None = None,
) -> ApplyResult:
    """Apply up.sql or down.sql of `bundle` with its lock phase built online (see the module's
    docstring); the same ApplyResult as `rollout.migrations.run_script`, `online` filled in.

    `retries`, `settings`, `before_commit` and `keep_export` mean what they mean to
    run_script: the retries bound every strong lock taken (the triggers, the swap, the old
    table's drop), `settings` hold for the swap's transaction, `before_commit` writes the ledger
    row inside it. `seconds` is the whole online apply; `lock_seconds` the swap's transaction
    from its lock request to COMMIT. `keep_going()` is called between batches and rounds (raise
    to stop: e.g. a WorkerWatch's check). `on_phase(name)` is called as each phase starts
    (and inside the backfill's batches, the catch-up's rounds and the swap's locked
    transaction: "backfill-batch", "catch-up-round", "swap-locked"), for tests. `trace`
    records the swap's transaction statement by statement, as run_script does.

    Raises OnlineRefused (nothing changed), LockNotGranted (the swap's lock was not granted:
    the table serves as before), RollbackRefused (down: rows break the restored constraint).
    """
    require_no_transaction(conn, f"online {direction}")
    options = options or OnlineOptions()
    retries = retries or LockRetries()
    table = online_table(bundle)
    _, lock_phase = split_lock_phase(bundle.body(direction))
    started = time.perf_counter()
    # The guard before any catalog change: two applies on a database that never had a rollout
    # would both create the ledger's schema, and one would die on it instead of being refused.
    with _one_at_a_time(conn):
        ledger.ensure_ledger(conn)
        with conn.transaction():
            conn.execute(sql_text(ONLINE_SQL / "progress_schema.sql").encode())
        closed = _closed(conn, say)
        how = already_done(conn, bundle, direction, table)
        if how is not None:
            finished = closed + _cleanup(conn, retries, say)
            state = "applied" if direction == "up" else "rolled back"
            raise AlreadyApplied(
                f"online {direction}: {bundle.version} is already {state} here ({how}); "
                + (f"finished what that run left: {'; '.join(finished)}" if finished
                   else "nothing was left to finish")
                + ". Nothing else to do"
            )  # fmt: skip
        return _apply(conn, bundle, direction, table, lock_phase, started, options, retries,
                      settings, say, before_commit, keep_export, on_phase, keep_going, trace)  # fmt: skip


class AlreadyApplied(RolloutError):
    """The online operation asked for is already done here (a re-run, e.g. after a kill once
    its swap had committed); what it left was finished, nothing else changed."""


def already_done(
    conn: psycopg.Connection, bundle: MigrationBundle, direction: str, table: str
) -> str | None:
    """How we know `bundle`'s `direction` is already done here, or None: the ledger's last
    committed apply or rollback of the version says so, or the last online swap that committed
    on `table` was this one and no ledger row since says otherwise."""
    state = ledger.version_state(conn, bundle.version)
    if state.at is not None and state.applied == (direction == "up"):
        return state.describe()
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        swap = cur.execute(
            sql_text(ONLINE_SQL / "last_swap.sql").encode(), {"table": table}
        ).fetchone()
    if swap is None or (swap["version"], swap["direction"]) != (bundle.version, direction):
        return None
    if state.at is not None and state.at > swap["finished_at"]:
        return None  # a later apply or rollback of the version, recorded in the ledger
    return (
        f"its online swap committed at {swap['finished_at']:%Y-%m-%d %H:%M:%S %Z}, "
        f"operation {swap['operation']}"
    )


@contextlib.contextmanager
def _one_at_a_time(conn: psycopg.Connection) -> Iterator[None]:
    """One online apply per database at a time (its cleanup would undo another's work), held by
    this session: a killed process's session ends, and with it the lock. Taken before anything
    is created; refused with TargetBusy, naming the session that holds it."""
    if not conn.execute("SELECT pg_try_advisory_lock(%s)", (ONLINE_LOCK_KEY,)).fetchone()[0]:
        holder = conn.execute(
            sql_text(ledger.LEDGER_DIR / "lock_holder.sql").encode(), {"key": ONLINE_LOCK_KEY}
        ).fetchone()[0]
        raise ledger.TargetBusy(
            f"another online apply is running on this database ({holder}): wait for it to "
            "end. Nothing was changed"
        )
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT pg_advisory_unlock(%s)", (ONLINE_LOCK_KEY,))


def _apply(
    conn: psycopg.Connection,
    bundle: MigrationBundle,
    direction: str,
    table: str,
    lock_phase: str,
    started: float,
    options: OnlineOptions,
    retries: LockRetries,
    settings: dict[str, str] | None,
    say: Say,
    before_commit: BeforeCommit | None,
    keep_export: KeepExport | None,
    on_phase: OnPhase,
    keep_going: Callable[[], None],
    trace: LockTrace | None = None,
) -> ApplyResult:
    progress = Progress(conn, bundle, direction, table, say, on_phase)
    search_path = conn.execute("SELECT current_setting('search_path')").fetchone()[0]

    with progress.phase("prepare") as facts:
        facts["cleanup"] = _cleanup(conn, retries, say)
        plan = plan_online(conn, bundle)
        facts.update(total_bytes=plan.total_bytes, rows=plan.estimated_rows,
                     free_bytes=plan.free_bytes)  # fmt: skip
        say(f"online {direction}: {plan.describe()}")
        if plan.problems:
            raise OnlineRefused(
                f"{table} cannot be rebuilt online: {'; '.join(plan.problems)}. Apply this "
                "bundle with apply_mode 'locking', or remove what is in the way first"
            )
        live = tuple(
            conn.execute(
                sql_text(ONLINE_SQL / "relation.sql").encode(), {"table": table}
            ).fetchone()[1:]
        )
    run = _Run(table, live)
    run.figures["table_bytes"] = plan.total_bytes
    run.figures["free_bytes"] = plan.free_bytes

    with progress.phase("rehearse") as facts:

        def rehearsal(c: psycopg.Connection, _attempt: int) -> tuple[Definition, Definition]:
            return rehearse(c, table, lock_phase, search_path)

        run.source, run.target = with_lock_retries(
            conn, rehearsal, retries, what=f"online {direction}: rehearsing the lock phase",
            say=say,
        )  # fmt: skip
        run.tables = capture.Tables.of(live, run.source, run.target)
        changed = sorted({s.name for s in set(run.target.statements) ^ set(run.source.statements)})
        facts["changes"] = changed
        say(f"online {direction}: the lock phase changes {', '.join(changed)}; built on a copy")

    try:
        result = _build_and_swap(conn, bundle, direction, run, progress, options, retries,
                                 settings, say, before_commit, keep_export, keep_going,
                                 on_phase, started, trace)  # fmt: skip
    except BaseException as exc:
        _after_failure(conn, exc, retries, say)
        if direction == "down" and isinstance(
            exc, (psycopg.errors.ExclusionViolation, psycopg.errors.UniqueViolation)
        ):
            raise _refused(conn, bundle, exc) from exc
        raise

    _finish(conn, run, progress, retries, say)
    total = time.perf_counter() - started
    run.figures["phases_s"] = {name: round(s, 3) for name, s in progress.timings.items()}
    run.figures["operation"] = str(progress.operation)
    say(
        f"online {direction}: done in {total:.1f} s; {table} locked {result.lock_seconds:.3f} s "
        f"at the swap (of which waiting for the lock {run.figures.get('lock_wait_s', 0):.3f} s)"
    )
    return dataclasses.replace(result, seconds=total, online=run.figures)


def _build_and_swap(
    conn: psycopg.Connection,
    bundle: MigrationBundle,
    direction: str,
    run: _Run,
    progress: Progress,
    options: OnlineOptions,
    retries: LockRetries,
    settings: dict[str, str] | None,
    say: Say,
    before_commit: BeforeCommit | None,
    keep_export: KeepExport | None,
    keep_going: Callable[[], None],
    on_phase: OnPhase,
    started: float,
    trace: LockTrace | None = None,
) -> ApplyResult:
    tables, target, source = run.tables, run.target, run.source
    assert tables is not None and target is not None and source is not None
    live = qualified(*run.live)
    in_batch = lambda: on_phase("backfill-batch")  # noqa: E731
    in_round = lambda: on_phase("catch-up-round")  # noqa: E731

    with progress.phase("capture"):
        with conn.transaction():
            pg_catalog_path(conn)
            for schema in (SHADOW_SCHEMA, RETIRED_SCHEMA):
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
                conn.execute(
                    sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(schema))
                )
            build_empty_copy(conn, target)
            capture.create_log(conn, tables)
        capture.create_keys_table(conn, tables)
        with_lock_retries(
            conn, lambda c, _n: capture.install_triggers(c, tables), retries,
            what=f"online {direction}: the change-log triggers on {run.table}", say=say,
        )  # fmt: skip
        say(f"online {direction}: {run.table}'s changes are logged from now on")

    with progress.phase("backfill") as facts:
        last_said = [time.perf_counter()]

        def between(done_blocks: int, total_blocks: int, copied: int) -> None:
            keep_going()
            if time.perf_counter() - last_said[0] > 10:
                say(f"online {direction}: backfill {done_blocks:,}/{total_blocks:,} blocks, "
                    f"{copied:,} rows")  # fmt: skip
                last_said[0] = time.perf_counter()
            if options.batch_pause_s:
                time.sleep(options.batch_pause_s)

        copied = capture.backfill(
            conn, tables, batch_rows=options.batch_rows, between_batches=between,
            in_batch=in_batch,
        )  # fmt: skip
        facts["rows"] = copied
        run.figures["backfilled_rows"] = copied
        say(f"online {direction}: {copied:,} rows copied")

    with progress.phase("catch-up") as facts:
        facts.update(_catch_up(conn, tables, options, keep_going, in_round))

    # The build and the analyze run as long as the table is big, on the copy only: their own
    # bound, not the role's default (30 s on a managed service would cut a 1M-row build).
    build = Bounds(ONLINE_BUILD_TIMEOUT_S)
    build_bounds = build.settings()
    role = RoleTimeouts.read(conn)
    say(f"online {direction}: "
        + build.describe(role, "each build on the copy", "a runaway's bound: the copy only"))  # fmt: skip
    with progress.phase("build") as facts:
        for statement in target.of(*AFTER_BACKFILL):
            keep_going()
            begun = time.perf_counter()
            with conn.transaction():
                set_local(conn, {"maintenance_work_mem": options.maintenance_work_mem,
                                 **build_bounds})  # fmt: skip
                conn.execute(statement.text.encode())
            facts[statement.name] = round(time.perf_counter() - begun, 3)
            say(f"online {direction}: {statement.kind} {statement.name} built on the copy in "
                f"{time.perf_counter() - begun:.1f} s")  # fmt: skip

    with progress.phase("catch-up") as facts:
        facts.update(_catch_up(conn, tables, options, keep_going, in_round))
        if options.verify:
            _round, compared = capture.caught_up_and_compared(conn, tables, in_round)
            facts.update(verify_rows=compared.live_rows, verify_equal=compared.equal)
            if not compared.equal:
                raise RolloutError(
                    f"online {direction}: the copy does not equal {run.table} after a catch-up "
                    f"({compared.copy_rows:,} rows against {compared.live_rows:,}); stopped "
                    "before the swap, nothing changed. This is a bug in the online apply: "
                    "apply with apply_mode 'locking' and report it"
                )
            say(f"online {direction}: the copy equals {run.table} ({compared.live_rows:,} rows, "
                "same checksum)")  # fmt: skip

    with progress.phase("analyze"), conn.transaction():
        set_local(conn, build_bounds)
        conn.execute(sql.SQL("ANALYZE {}").format(qualified(*tables.copy)))

    swap_facts: dict[str, Any] = {}

    stamps: dict[str, float] = {}
    # The tables the foreign keys reference: the old ones are dropped, the new ones added in the
    # swap (ACCESS EXCLUSIVE on each, for catalog changes only).
    referenced = [
        sql.Identifier(schema, name)
        for _oid, schema, name in conn.execute(
            sql_text(ONLINE_SQL / "referenced_tables.sql").encode(), {"tables": [run.table]}
        ).fetchall()
    ]

    def lock(c: psycopg.Connection) -> None:
        """The table (and the tables its foreign keys reference) first, before the script's own
        statements: the application takes allocations before the others it writes (a confirm
        writes allocations, then the cache), so taking it last would deadlock with every
        confirm in flight."""
        stamps["asked"] = time.perf_counter()
        c.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.SQL(", ").join([live, qualified(*tables.copy), *referenced])
            )
        )
        stamps["locked"] = time.perf_counter()

    def swap(c: psycopg.Connection) -> None:
        asked, locked = stamps["asked"], stamps["locked"]
        swap_facts["script_before_lock_phase_s"] = round(time.perf_counter() - locked, 4)
        on_phase("swap-locked")
        last = capture.catch_up(c, tables, lambda: None)
        c.execute("SET CONSTRAINTS ALL IMMEDIATE")  # a deferred constraint of the copy: now
        # The old table's foreign keys go now, under the locks already held, so that dropping
        # it later locks nothing the application uses.
        for statement in source.of("fkey"):
            c.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    live, sql.Identifier(statement.name)
                )
            )
        unchecked = set(target.foreign_keys_to_validate)
        # Publications come from the table as it is (the rehearsal leaves them out).
        for statement in [*target.of(*IN_SWAP), *source.of("publication")]:
            text = statement.text
            if statement.kind == "fkey" and statement.name in unchecked:
                text += " NOT VALID"  # validated after the swap, outside the lock
            c.execute(text.encode())
        capture.drop_triggers(c, live)
        c.execute(
            sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(live, sql.Identifier(RETIRED_SCHEMA))
        )
        c.execute(
            sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                qualified(*tables.copy), sql.Identifier(run.live[0])
            )
        )
        swap_facts.update(
            lock_wait_s=round(locked - asked, 4),
            last_round_keys=last.taken,
            swap_statements_s=round(time.perf_counter() - locked, 4),
        )

    def record(c: psycopg.Connection, done: ScriptRun) -> None:
        whole = dataclasses.replace(done, seconds=time.perf_counter() - started)
        if before_commit:
            before_commit(c, whole)
        progress.committed(c, "swap")

    def catch_up_while_waiting(seconds: float) -> None:
        """Between the swap's attempts: keep the copy close, so the next attempt has little
        to replay under the lock."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            keep_going()
            capture.catch_up_round(conn, tables, lambda: None)
            time.sleep(min(0.2, max(0.0, until - time.monotonic())))

    what = {"table": run.table, "validate": target.foreign_keys_to_validate}
    with progress.phase("swap", what) as facts:
        capture.catch_up_round(conn, tables, in_round)  # the last one outside the lock
        result = run_script(
            conn, bundle, direction, retries=retries, settings=settings, say=say,
            before_commit=record, keep_export=keep_export, lock_first=lock, lock_phase=swap,
            sleep=catch_up_while_waiting, trace=trace,
        )  # fmt: skip
        facts.update(swap_facts, lock_seconds=round(result.lock_seconds, 4),
                     attempts=result.attempts)  # fmt: skip
        run.figures.update(swap_facts, attempts=result.attempts)
    return result


def _catch_up(
    conn: psycopg.Connection,
    tables: capture.Tables,
    options: OnlineOptions,
    keep_going: Callable[[], None],
    in_round: Callable[[], None],
) -> dict[str, Any]:
    rounds, taken = 0, 0
    while rounds < options.max_catch_up_rounds:
        keep_going()
        done = capture.catch_up_round(conn, tables, in_round)
        rounds += 1
        taken += done.taken
        if done.taken < options.swap_when_pending:
            break
    return {"rounds": rounds, "keys": taken}


def _finish(
    conn: psycopg.Connection, run: _Run, progress: Progress, retries: LockRetries, say: Say
) -> None:
    """After the swap committed: the foreign keys validated, the old table and the log
    dropped. A failure here leaves the migration applied; `cleanup` finishes it later."""
    assert run.target is not None
    with progress.phase("validate") as facts:
        for name in run.target.foreign_keys_to_validate:
            try:
                _validate(conn, run.table, name, retries, say)
                facts.setdefault("validated", []).append(name)
            except (LockNotGranted, psycopg.Error) as exc:
                facts.setdefault("pending", []).append(name)
                say(f"online: foreign key {name} of {run.table} is still NOT VALID ({exc}); "
                    "it is enforced for new rows; rollout.online.cleanup validates it later")  # fmt: skip
    with progress.phase("retire"):
        try:
            _cleanup(conn, retries, say)
        except (LockNotGranted, psycopg.Error) as exc:
            say(f"online: the old table is still in {RETIRED_SCHEMA} ({exc}); "
                "rollout.online.cleanup drops it later")  # fmt: skip


def _after_failure(
    conn: psycopg.Connection, exc: BaseException, retries: LockRetries, say: Say
) -> None:
    """The swap did not commit: the live table serves with every write. Remove the copy, the
    log and the triggers now if the connection still works; else the next run does."""
    if conn.closed or conn.broken:
        say("online: stopped; the copy and the change-log triggers are left for the next run")
        return
    with contextlib.suppress(psycopg.Error):
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
    try:
        _cleanup(conn, retries, say)
    except (RolloutError, psycopg.Error) as cleanup_exc:
        say(f"online: stopped ({exc}); cleanup did not finish ({cleanup_exc}): the next online "
            "apply or rollout.online.cleanup removes what is left")  # fmt: skip


def _refused(
    conn: psycopg.Connection, bundle: MigrationBundle, exc: BaseException
) -> RollbackRefused:
    """The copy could not take the restored constraint: the down's refusal, with its pairs."""
    from rollout.migrations import list_down_conflicts

    count = "some"
    if bundle.check_path("down_conflicts").is_file():
        with contextlib.suppress(psycopg.Error):
            count = str(len(list_down_conflicts(conn, bundle)))
    reason = str(exc).strip().splitlines()[0]
    return RollbackRefused(
        f"rollback refused: {count} allocation pair(s) would overlap under the restored "
        f"constraint ({reason}). List them with {bundle.path.name}/checks/down_conflicts.sql; "
        "resolve them or keep the migration. The table serves as before; nothing was deleted"
    )

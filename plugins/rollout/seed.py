"""Deterministic demo/test data: sql/seed/seed.sql, run step by step with progress."""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import psycopg
from psycopg.conninfo import make_conninfo

from rollout import db
from rollout.db import require_no_transaction
from rollout.errors import RolloutError
from rollout.paths import SEED_DIR, sql_text

log = logging.getLogger(__name__)

SEED_TABLES = (
    "restaurants", "zones", "table_inventory", "bookings", "table_holds", "table_hold_members",
    "booking_table_assignments", "booking_assignment_idempotency", "allocations", "capacity_outbox",
)  # fmt: skip
REBUILD_STEP = "rebuild indexes and constraints"
# The longest the seed goes without a progress line, about: a long statement (a 1M seed's
# exclusion constraint takes minutes) gets a line from the ticker when nothing else was said.
TICK_S = 5.0


@dataclass(frozen=True)
class SeedResult:
    allocations: int
    seed: int
    anchor: dt.date
    seconds: float
    row_counts: dict[str, int] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)
    # each index and constraint put back, by name, in the order they were
    rebuild_seconds: dict[str, float] = field(default_factory=dict)
    # the longest the seed went without a progress line (goal, issue 20: at most 10 s)
    longest_quiet_s: float = 0.0


class ProgressLines:
    """A progress callback shared by threads: one line at a time, when the last one was, and
    the longest time without one so far (from the start)."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self.last = time.monotonic()
        self._longest_quiet = 0.0

    def __call__(self, line: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._longest_quiet = max(self._longest_quiet, now - self.last)
            self.last = now
            self._progress(line)

    def quiet_for(self) -> float:
        return time.monotonic() - self.last

    def longest_quiet(self) -> float:
        return max(self._longest_quiet, self.quiet_for())


class ProgressTicker:
    """While a connection's statements run, say what its backend is doing whenever nothing was
    said for `every_s` seconds: what the caller said it does (`doing`), for how long, and what
    the server reports (an index or constraint build's phase and blocks or tuples done, an
    ANALYZE's; sql/seed/progress.sql), read from a connection of its own. Without that
    connection the lines still come, without the server's part. The thread ends with the block,
    whatever happened in it."""

    def __init__(
        self, conn: psycopg.Connection, say: ProgressLines, *, every_s: float = TICK_S
    ) -> None:
        self.every_s = every_s
        self._say = say
        self._pid = conn.info.backend_pid
        self._dsn = make_conninfo(conn.info.dsn, password=conn.info.password or None)
        self._query = sql_text(SEED_DIR / "progress.sql").encode()
        self._lock = threading.Lock()
        self._what, self._since = "seed", time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="seed-progress")

    def doing(self, what: str) -> None:
        with self._lock:
            self._what, self._since = what, time.monotonic()

    def __enter__(self) -> ProgressTicker:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        watcher: psycopg.Connection | None = None
        try:
            try:
                watcher = db.connect(
                    self._dsn,
                    application_name="rollout seed progress",
                    session_settings={"statement_timeout": "2s"},
                )
            except RolloutError as exc:
                log.warning("seed progress: no connection to watch the seed from (%s)", exc)
            while not self._stop.wait(min(1.0, self.every_s / 4)):
                if self._say.quiet_for() >= self.every_s:
                    line, watcher = self._line(watcher)
                    self._say(line)
        except Exception:  # a progress line is never worth failing the seed for
            log.exception("seed progress: the ticker stopped")
        finally:
            if watcher is not None:
                watcher.close()

    def _line(self, watcher: psycopg.Connection | None) -> tuple[str, psycopg.Connection | None]:
        with self._lock:
            what, since = self._what, self._since
        line = f"{what}: {time.monotonic() - since:.0f} s in"
        if watcher is None:
            return line, None
        try:
            rows = watcher.execute(self._query, {"pid": self._pid}).fetchall()
        except psycopg.Error as exc:
            log.warning("seed progress: cannot read the seed's progress any more (%s)", exc)
            watcher.close()
            return line, None
        for command, relation, phase, blocks_done, blocks_total, tuples_done, tuples_total in rows:
            line += f"; {command} on {relation}: {phase}"
            if blocks_total:
                line += f", blocks {blocks_done:,}/{blocks_total:,}"
            if tuples_total:
                line += f", tuples {tuples_done:,}/{tuples_total:,}"
        return line, watcher


def seed_steps() -> list[tuple[str, str]]:
    """(name, statements) for each `-- step:` section of seed.sql, in order."""
    parts = re.split(r"^-- step: (.+)$", sql_text(SEED_DIR / "seed.sql"), flags=re.MULTILINE)
    return [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts), 2)]


def seed_database(
    conn: psycopg.Connection,
    allocations: int,
    *,
    seed: int = 42,
    anchor: dt.date | None = None,
    progress: Callable[[str], None] = log.info,
    tick_s: float = TICK_S,
) -> SeedResult:
    """Fill an empty baseline database with exactly `allocations` allocations, in one transaction.

    `progress` gets a line at the end of each step, for each index or constraint put back
    that took over a second, and from a ticker whenever nothing was said for `tick_s` seconds
    (what runs, for how long, and the server's progress of an index build or ANALYZE)."""
    if allocations < 1:
        raise RolloutError(f"allocations must be a positive number, got {allocations}")
    require_no_transaction(conn, "seed_database")
    anchor = anchor or dt.datetime.now(dt.UTC).date()
    if conn.execute("SELECT EXISTS (SELECT 1 FROM public.restaurants)").fetchone()[0]:
        raise RolloutError(
            "the database already holds restaurants: seed an empty baseline database "
            "(reset it first, e.g. `python -m rollout demo --reset`)"
        )
    started = time.perf_counter()
    step_seconds: dict[str, float] = {}
    rebuild_seconds: dict[str, float] = {}
    say = ProgressLines(progress)

    def relay_notice(diag: psycopg.errors.Diagnostic) -> None:
        say(f"seed: {diag.message_primary}")

    conn.add_notice_handler(relay_notice)
    try:
        with conn.transaction(), ProgressTicker(conn, say, every_s=tick_s) as ticker:
            for name, value in (("allocations", allocations), ("seed", seed), ("anchor", anchor)):
                conn.execute(
                    "SELECT set_config(%s, %s, true)", (f"rollout_seed.{name}", str(value))
                )
            steps = seed_steps()
            for index, (name, statements) in enumerate(steps, start=1):
                label = f"seed [{index}/{len(steps)}] {name}"
                ticker.doing(label)
                step_started = time.perf_counter()
                if name == REBUILD_STEP:
                    rebuild_seconds = put_back(conn, statements, ticker, say, label)
                else:
                    conn.execute(statements.encode())
                step_seconds[name] = time.perf_counter() - step_started
                say(f"{label}: {step_seconds[name]:.1f} s")
    finally:
        conn.remove_notice_handler(relay_notice)
    counts = table_row_counts(conn)
    if counts["allocations"] != allocations:
        raise RolloutError(f"seed made {counts['allocations']} allocations, not {allocations}")
    return SeedResult(
        allocations=allocations,
        seed=seed,
        anchor=anchor,
        seconds=time.perf_counter() - started,
        row_counts=counts,
        step_seconds=step_seconds,
        rebuild_seconds=rebuild_seconds,
        longest_quiet_s=say.longest_quiet(),
    )


def put_back(
    conn: psycopg.Connection,
    query: str,
    ticker: ProgressTicker,
    say: Callable[[str], None],
    label: str,
) -> dict[str, float]:
    """Run the statements the rebuild step's query returns, one by one: seconds for each."""
    seconds: dict[str, float] = {}
    for name, statement in conn.execute(query.encode()).fetchall():
        ticker.doing(f"{label}: {name}")
        started = time.perf_counter()
        conn.execute(statement.encode())
        seconds[name] = time.perf_counter() - started
        if seconds[name] > 1.0:  # the slow ones, as progress
            say(f"seed: rebuilt {name} in {seconds[name]:.1f} s")
    return seconds


def table_row_counts(
    conn: psycopg.Connection, tables: tuple[str, ...] = SEED_TABLES
) -> dict[str, int]:
    query = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM public.{t}" for t in tables)
    return {name: count for name, count in conn.execute(query).fetchall()}

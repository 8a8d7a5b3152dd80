"""A booking workload: the application writing while the rollout works (the writer-stall
benchmark, and the end-to-end tests of a live production).

Writers do what the booking flow does, through the application's own SQL: a pending booking,
a hold on a table with its shadow allocation, then `confirm_hold_assignment_tx`, one
transaction per booking, in a closed loop with a short pause. Each transaction's start and
end are kept, so a stall shows as the transactions that waited. One long reader holds a
transaction open on `allocations`, as a report would, while the migration asks for its lock.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from dataclasses import dataclass, field

from rollout import db
from rollout.paths import SQL_DIR, sql_text

SQL = SQL_DIR / "workload"
# A transaction this much slower than the workload's own pace waited on a lock: counted as
# blocked. The workload's transactions take a few milliseconds when nothing is in the way.
BLOCKED_AFTER_S = 0.25
# Bookings go far beyond the seed's 90 days, each writer in its own slots, so the writers never
# collide with the data or each other: any wait measured is a lock wait.
FIRST_SLOT = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
SLOT = dt.timedelta(hours=2)
BOOKING_LENGTH = dt.timedelta(minutes=90)


@dataclass
class WriterStats:
    """What the writers saw, all in seconds (perf_counter clock)."""

    spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end) per booking
    errors: list[str] = field(default_factory=list)

    @property
    def latencies(self) -> list[float]:
        return sorted(end - start for start, end in self.spans)

    def percentile(self, q: float) -> float:
        values = self.latencies
        if not values:
            return 0.0
        return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]

    @property
    def max_latency(self) -> float:
        return max(self.latencies, default=0.0)

    @property
    def blocked_seconds(self) -> float:
        """Wall-clock time during which at least one writer was blocked (the union of the
        spans of transactions slower than BLOCKED_AFTER_S)."""
        slow = sorted((s, e) for s, e in self.spans if e - s > BLOCKED_AFTER_S)
        total, reach = 0.0, float("-inf")
        for start, end in slow:
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total


class BookingWriters:
    """`count` writer threads booking and confirming tables until stopped."""

    def __init__(self, dsn: str, count: int = 4, pause_s: float = 0.05, run_key: int = 0) -> None:
        self.dsn, self.count, self.pause_s = dsn, count, pause_s
        self.run_key = run_key  # keeps two runs on one database in different slots
        self.stats = WriterStats()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        with db.connect(dsn) as conn:
            self._tables = conn.execute(sql_text(SQL / "bookable_tables.sql").encode()).fetchall()
        if not self._tables:
            raise RuntimeError("the database has no tables to book: seed it first")

    def start(self) -> None:
        for index in range(self.count):
            thread = threading.Thread(target=self._write, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> WriterStats:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        return self.stats

    def _write(self, index: int) -> None:
        hold = sql_text(SQL / "hold_table.sql").encode()
        confirm = sql_text(SQL / "confirm_hold.sql").encode()
        draw = random.Random(index)
        with db.connect(self.dsn, application_name=f"bench-writer-{index}") as conn:
            n = 0
            while not self._stop.is_set():
                n += 1
                restaurant_id, table_id = draw.choice(self._tables)
                slot = (self.run_key * 1_000_000 + n) * self.count + index
                start_at = FIRST_SLOT + slot * SLOT
                params = {
                    "restaurant_id": restaurant_id,
                    "table_id": table_id,
                    "start_at": start_at,
                    "end_at": start_at + BOOKING_LENGTH,
                }
                started = time.perf_counter()
                try:
                    with conn.transaction():
                        hold_id, booking_id = conn.execute(hold, params).fetchone()
                        conn.execute(
                            confirm,
                            {
                                "hold_id": hold_id,
                                "booking_id": booking_id,
                                "idempotency_key": f"bench-{self.run_key}-{index}-{n}",
                            },
                        )
                except Exception as exc:  # recorded and reported: a writer never dies silently
                    with self._lock:
                        self.stats.errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
                else:
                    ended = time.perf_counter()
                    with self._lock:
                        self.stats.spans.append((started, ended))
                self._stop.wait(self.pause_s)


class ChurnWriters:
    """`count` writer threads that book (hold, then confirm through the application's
    function), move confirmed bookings to another time (their allocations follow) and cancel
    them (their allocations go by ON DELETE CASCADE), each in its own transaction, until
    stopped. Each logs what its committed transactions left: allocation id -> (booking id,
    window start), or None for one that must be gone (a hold's shadow allocation after the
    confirm, a cancelled booking's). `check(conn)` compares the table with that log."""

    def __init__(
        self,
        dsn: str,
        count: int = 2,
        pause_s: float = 0.02,
        run_key: int = 11,
        *,
        pooled: bool = False,
    ) -> None:
        self.dsn, self.count, self.pause_s, self.run_key = dsn, count, pause_s, run_key
        # Through a transaction-mode pooler an application prepares no statements: the next
        # transaction may run on a server connection that never saw them.
        self.connect_options = {"prepare_threshold": None} if pooled else {}
        self.expected: dict = {}
        self.committed = {"book": 0, "move": 0, "cancel": 0}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        with db.connect(dsn) as conn:
            self._tables = conn.execute(sql_text(SQL / "bookable_tables.sql").encode()).fetchall()

    def __enter__(self) -> ChurnWriters:
        for index in range(self.count):
            thread = threading.Thread(target=self._write, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def total(self) -> int:
        with self._lock:
            return sum(self.committed.values())

    def _write(self, index: int) -> None:
        text = {name: sql_text(SQL / f"{name}.sql").encode() for name in (
            "hold_table", "confirm_hold", "booking_allocations", "move_booking",
            "cancel_booking")}  # fmt: skip
        draw = random.Random(1000 + index)
        mine: list = []  # this writer's confirmed bookings
        slot = 0

        def next_window() -> tuple[dt.datetime, dt.datetime]:
            nonlocal slot
            slot += 1
            start = FIRST_SLOT + ((self.run_key * 1_000_000 + slot) * self.count + index) * SLOT
            return start, start + BOOKING_LENGTH

        while not self._stop.is_set():
            try:
                with db.connect(
                    self.dsn, application_name=f"app-churn-{index}", **self.connect_options
                ) as conn:
                    while not self._stop.is_set():
                        action = draw.choice(("book", "book", "book", "move", "cancel"))
                        if action != "book" and not mine:
                            action = "book"
                        log: dict = {}
                        conn.execute("BEGIN")
                        try:
                            if action == "book":
                                restaurant_id, table_id = draw.choice(self._tables)
                                start, end = next_window()
                                hold_id, booking = conn.execute(text["hold_table"], {
                                    "restaurant_id": restaurant_id, "table_id": table_id,
                                    "start_at": start, "end_at": end}).fetchone()  # fmt: skip
                                for alloc, _shadow, _start in conn.execute(
                                    text["booking_allocations"], {"booking_id": booking}
                                ).fetchall():
                                    log[alloc] = None  # the hold's shadow: the confirm deletes it
                                conn.execute(text["confirm_hold"], {
                                    "hold_id": hold_id, "booking_id": booking,
                                    "idempotency_key": f"churn-{index}-{slot}"})  # fmt: skip
                                for alloc, _shadow, start_at in conn.execute(
                                    text["booking_allocations"], {"booking_id": booking}
                                ).fetchall():
                                    log[alloc] = (booking, start_at)
                            elif action == "move":
                                booking = draw.choice(mine)
                                start, end = next_window()
                                for (alloc,) in conn.execute(text["move_booking"], {
                                        "booking_id": booking, "start_at": start,
                                        "end_at": end}).fetchall():  # fmt: skip
                                    log[alloc] = (booking, start)
                            else:
                                booking = mine.pop(draw.randrange(len(mine)))
                                for alloc, _shadow, _start in conn.execute(
                                    text["booking_allocations"], {"booking_id": booking}
                                ).fetchall():
                                    log[alloc] = None
                                conn.execute(text["cancel_booking"], {"booking_id": booking})
                        except BaseException:
                            conn.execute("ROLLBACK")
                            raise
                        # COMMIT and its log together: check() never sees one without the other
                        with self._lock:
                            conn.execute("COMMIT")
                            self.expected.update(log)
                            self.committed[action] += 1
                        if action == "book":
                            mine.append(booking)
                        self._stop.wait(self.pause_s)
            except Exception as exc:  # recorded: a writer never fails silently
                with self._lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
                self._stop.wait(0.2)

    def check(self, conn) -> list[str]:
        """Every committed change present exactly once, nothing that must be gone: problems."""
        with self._lock:  # no writer commits meanwhile: the table and the log agree
            expected = dict(self.expected)
            rows = conn.execute(
                'SELECT id, booking_id, lower("window") FROM public.allocations WHERE id = ANY(%s)',
                (list(expected),),
            ).fetchall()
        found: dict = {}
        for alloc, booking, start in rows:
            found.setdefault(alloc, []).append((booking, start))
        problems = []
        for alloc, want in expected.items():
            got = found.get(alloc, [])
            if want is None and got:
                problems.append(f"{alloc} should be gone, is there {len(got)} time(s)")
            elif want is not None and got != [want]:
                problems.append(f"{alloc} should be {want}, is {got}")
        return problems


class OverlapProber:
    """Tries, again and again until stopped, to commit a real allocation overlapping a real
    one: the constraint (old or new) must refuse every try. `committed` counts the tries that
    got through (must stay 0)."""

    def __init__(self, dsn: str, every_s: float = 0.05) -> None:
        self.dsn, self.every_s = dsn, every_s
        self.refused = 0
        self.committed = 0
        self.other_errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._try, daemon=True)

    def __enter__(self) -> OverlapProber:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _try(self) -> None:
        import psycopg

        attempt = sql_text(SQL / "overlap_attempt.sql").encode()
        while not self._stop.is_set():
            try:
                with db.connect(self.dsn, application_name="app-overlap-prober") as conn:
                    while not self._stop.is_set():
                        try:
                            with conn.transaction():
                                conn.execute(attempt)
                            self.committed += 1
                        except psycopg.errors.ExclusionViolation:
                            self.refused += 1
                        self._stop.wait(self.every_s)
            except Exception as exc:
                self.other_errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
                self._stop.wait(0.2)


class LongReader:
    """One transaction reading allocations, kept open `seconds` from when it has read."""

    def __init__(self, dsn: str, seconds: float) -> None:
        self.dsn, self.seconds = dsn, seconds
        self.reading = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self.reading.wait(timeout=600):
            raise RuntimeError("the long reader never got to read allocations")

    def join(self) -> None:
        self._thread.join()

    def _read(self) -> None:
        with (
            db.connect(self.dsn, application_name="bench-long-reader") as conn,
            conn.transaction(),
        ):
            conn.execute(sql_text(SQL / "long_read.sql").encode()).fetchone()
            self.reading.set()
            time.sleep(self.seconds)


class OutboxWriter:
    """The application's event producer: one `booking.created` outbox row every `every_s`
    seconds until stopped, each in its own transaction (what reproduced the false "rows lost"
    on a live production)."""

    def __init__(self, dsn: str, every_s: float = 0.2) -> None:
        self.dsn, self.every_s = dsn, every_s
        self.written = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def start(self) -> OutboxWriter:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=60)
        return self.written

    def _write(self) -> None:
        insert = sql_text(SQL / "outbox_event.sql").encode()
        while not self._stop.is_set():
            try:
                with db.connect(self.dsn, application_name="app-outbox") as conn:
                    while not self._stop.is_set():
                        conn.execute(insert)
                        self.written += 1
                        self._stop.wait(self.every_s)
            except Exception as exc:  # a server restart or a lock: note it, reconnect, go on
                self.errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
                self._stop.wait(self.every_s)


class LiveApplication:
    """Everything the application writes while a rollout runs on production: booking writers
    (bookings, holds, shadow allocations, confirms) and the outbox producer."""

    def __init__(self, dsn: str, writers: int = 2, pause_s: float = 0.2) -> None:
        self.bookings = BookingWriters(dsn, count=writers, pause_s=pause_s, run_key=7)
        self.outbox = OutboxWriter(dsn)

    def __enter__(self) -> LiveApplication:
        self.bookings.start()
        self.outbox.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bookings.stop()
        self.outbox.stop()

    def committed(self) -> int:
        return len(self.bookings.stats.spans) + self.outbox.written

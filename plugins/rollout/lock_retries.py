"""The one way this project runs a statement that takes a strong lock: `with_lock_retries`.

While a statement waits for ACCESS EXCLUSIVE, every writer that comes after it queues behind
it. So each attempt waits at most `lock_timeout_ms` (the longest any writer can queue behind
us), gives way, sleeps, and tries again: the retries, not one long wait, outlast a long
reader. Sleeps grow (doubling from `backoff_s`), are capped (`max_sleep_s`) and jittered (so
several rollouts, or a rollout and the application's own retries, do not fall into step), and
the whole wait is bounded (`max_total_wait_s`). Every attempt is logged with its timeout.

Like GitLab's `with_lock_retries`, one attempt is one transaction: a failed attempt rolls back
everything it did. Unlike it, the last attempt never drops the timeout: a step that cannot get
the lock fails cleanly, with `LockNotGranted`, and the target unchanged.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import psycopg

from rollout.db import require_no_transaction
from rollout.errors import RolloutError
from rollout.timeouts import set_local

T = TypeVar("T")
Say = Callable[[str], None]


class LockNotGranted(RolloutError):
    """The lock was not granted in the attempts allowed; every attempt rolled back."""


@dataclass(frozen=True)
class LockRetries:
    lock_timeout_ms: int = 500  # each attempt's wait for a lock: the longest a writer queues
    retries: int = 5  # attempts after the first
    backoff_s: float = 2.0  # sleep before the first retry; doubles each time
    max_sleep_s: float = 30.0  # no single sleep is longer
    jitter: float = 0.2  # each sleep is drawn from ±20 % of its nominal length

    def __post_init__(self) -> None:
        if self.lock_timeout_ms < 1:
            raise RolloutError(f"lock_timeout_ms must be at least 1, not {self.lock_timeout_ms}")
        if self.retries < 0 or self.backoff_s < 0 or self.max_sleep_s < 0:
            raise RolloutError("lock retries, backoff and the sleep cap cannot be negative")
        if not 0 <= self.jitter < 1:
            raise RolloutError(f"jitter is a fraction below 1, not {self.jitter}")

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def nominal_sleep_s(self, attempt: int) -> float:
        """The sleep after attempt `attempt` failed (before attempt + 1), without jitter."""
        return min(self.max_sleep_s, self.backoff_s * 2 ** (attempt - 1))

    @property
    def max_total_wait_s(self) -> float:
        """The longest the attempts can take waiting for the lock and sleeping, all told."""
        sleeps = sum(self.nominal_sleep_s(a) for a in range(1, self.attempts))
        return self.attempts * self.lock_timeout_ms / 1000 + sleeps * (1 + self.jitter)

    def describe(self) -> str:
        return (
            f"lock_timeout {self.lock_timeout_ms} ms, {self.attempts} attempts, sleeps from "
            f"{self.backoff_s:g} s doubling to at most {self.max_sleep_s:g} s; at most "
            f"{self.max_total_wait_s:.0f} s waiting in all"
        )


def with_lock_retries(
    conn: psycopg.Connection,
    work: Callable[[psycopg.Connection, int], T],
    retries: LockRetries,
    *,
    what: str,
    say: Say,
    settings: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    on_lost: Callable[[psycopg.Connection, int], None] | None = None,
) -> T:
    """Run `work(conn, attempt)` in a transaction of its own under `lock_timeout`, retrying
    the whole transaction when a lock is not granted; its result once one attempt commits.

    `settings` are set for each attempt's transaction only (e.g. statement_timeout). Any error
    other than a lock timeout propagates at once, after the attempt rolled back. `on_lost(conn,
    attempt)` runs after an attempt gave way and rolled back (outside any transaction): the
    caller logs there what it was waiting for and who held it."""
    require_no_transaction(conn, what)
    draw = rng or random.Random()
    started = time.monotonic()
    timeout = f"{retries.lock_timeout_ms}ms"
    for attempt in range(1, retries.attempts + 1):
        say(
            f"{what}: attempt {attempt}/{retries.attempts}, lock_timeout {retries.lock_timeout_ms} ms"
            + "".join(f", {name} {value}" for name, value in (settings or {}).items())
        )
        try:
            with conn.transaction():
                set_local(conn, {"lock_timeout": timeout, **(settings or {})})
                return work(conn, attempt)
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
            # A deadlock with the application is a lock race lost like a timeout: the whole
            # attempt rolled back, the application's transaction went on; try again later.
            lost = (
                "deadlocked with another session"
                if isinstance(exc, psycopg.errors.DeadlockDetected)
                else f"not granted within {retries.lock_timeout_ms} ms"
            )
            if on_lost is not None:
                on_lost(conn, attempt)
            waited = time.monotonic() - started
            if attempt == retries.attempts:
                raise LockNotGranted(
                    f"{what}: the lock was not granted within {retries.lock_timeout_ms} ms in "
                    f"{retries.attempts} attempts ({waited:.1f} s in all); every attempt rolled "
                    "back, nothing changed. Another session holds the table (a long report or "
                    "transaction): retry in a quieter moment, or raise lock_retries"
                ) from None
            pause = retries.nominal_sleep_s(attempt) * draw.uniform(
                1 - retries.jitter, 1 + retries.jitter
            )
            say(
                f"{what}: lock {lost} (attempt {attempt}/{retries.attempts}); rolled back; "
                f"retry in {pause:.1f} s"
            )
            sleep(pause)
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

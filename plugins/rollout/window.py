"""The maintenance window: the one place that knows when production may be changed.

A window is either one stretch of time (`once`: a start, or "now", and a length) or the same
stretch every day (`daily`: a local start time and a length), in a named time zone. Before the
apply, `decide` says whether to go now, wait (and until when), or give up, given the predicted
lock time: the apply never starts when its lock would outlast the window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rollout.errors import RolloutError

# Room left at the end of the window beyond the predicted lock: the prediction's error
# (benchmarks/README.md) plus the validation that follows.
SAFETY_FACTOR = 1.5


class WindowError(RolloutError):
    """A window that cannot be understood (bad time, zone or length)."""


@dataclass(frozen=True)
class Decision:
    action: str  # "go", "wait" or "refuse"
    reason: str
    opens_at: dt.datetime | None = None  # when waiting
    closes_at: dt.datetime | None = None


@dataclass(frozen=True)
class MaintenanceWindow:
    kind: str  # "once" or "daily"
    start: str  # "now" or "YYYY-MM-DD HH:MM" (once); "HH:MM" (daily)
    minutes: int
    timezone: str = "UTC"
    on_passed: str = "fail"  # "fail" or "wait_next" (daily only)

    def __post_init__(self) -> None:
        if self.kind not in ("once", "daily"):
            raise WindowError(f"window_kind: {self.kind!r} is neither 'once' nor 'daily'")
        if self.minutes < 1:
            raise WindowError(f"window_minutes: {self.minutes} must be at least 1")
        if self.on_passed not in ("fail", "wait_next"):
            raise WindowError(
                f"on_window_passed: {self.on_passed!r} is neither 'fail' nor 'wait_next'"
            )
        if self.on_passed == "wait_next" and self.kind == "once":
            raise WindowError("on_window_passed: 'wait_next' needs a daily window (window_kind)")
        self.zone  # noqa: B018 - validates the time zone
        if self.start == "now" and self.kind == "daily":
            raise WindowError("window_start: a daily window needs a time (HH:MM), not 'now'")
        if self.start != "now":
            self._start_time()

    @property
    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise WindowError(
                f"window_timezone: {self.timezone!r} is not a time zone name (e.g. Europe/London)"
            ) from None

    def _start_time(self) -> dt.datetime | dt.time:
        try:
            if self.kind == "daily":
                return dt.time.fromisoformat(self.start)
            return dt.datetime.fromisoformat(self.start).replace(tzinfo=self.zone)
        except ValueError:
            shape = "HH:MM" if self.kind == "daily" else "'now' or YYYY-MM-DD HH:MM"
            raise WindowError(f"window_start: {self.start!r} is not {shape}") from None

    def opening(
        self, now: dt.datetime, run_started: dt.datetime
    ) -> tuple[dt.datetime, dt.datetime] | None:
        """The window that is open at `now` or opens next, as (start, end) in UTC; None when a
        one-off window has passed. "now" means the window opened when the run started.

        The start is local wall time in the window's zone; the length is real time, added in
        UTC, so a 120-minute window lasts 120 minutes on the days the clocks change too. A
        local start the clocks skip (spring forward) opens at the instant it would have had
        before the change; one they repeat (fall back) opens at its first occurrence."""
        length = dt.timedelta(minutes=self.minutes)
        if self.start == "now":
            return (run_started, run_started + length) if now < run_started + length else None
        start = self._start_time()
        if isinstance(start, dt.datetime):
            opens = start.astimezone(dt.UTC)
            return (opens, opens + length) if now < opens + length else None
        local_today = now.astimezone(self.zone).date()
        for days in (-1, 0, 1):  # yesterday's window may still be open after midnight
            opens, closes = self.daily_opening(local_today + dt.timedelta(days=days))
            if now < closes:
                return opens, closes
        raise AssertionError("a daily window always opens within a day")  # pragma: no cover

    def daily_opening(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """A daily window's (start, end) in UTC on a local calendar day."""
        start = self._start_time()
        assert isinstance(start, dt.time), "daily windows only"
        opens = dt.datetime.combine(day, start, tzinfo=self.zone).astimezone(dt.UTC)
        return opens, opens + dt.timedelta(minutes=self.minutes)

    def can_ever_fit(self, predicted_lock_s: float) -> bool:
        """Whether the predicted lock (with the margin) fits in a whole window at all."""
        return predicted_lock_s * SAFETY_FACTOR <= self.minutes * 60

    def decide(
        self, now: dt.datetime, run_started: dt.datetime, predicted_lock_s: float
    ) -> Decision:
        window = self.opening(now, run_started)
        if window is None:
            return Decision("refuse", f"the maintenance window ({self.describe()}) has passed")
        opens, closes = window
        if now < opens:
            if not self.can_ever_fit(predicted_lock_s):
                return Decision("refuse", self._never_fits(predicted_lock_s))
            return Decision(
                "wait",
                f"waiting for the window: it opens at {self._local(opens)}, in "
                f"{_minutes(opens - now)}",
                opens,
                closes,
            )
        needed = dt.timedelta(seconds=predicted_lock_s * SAFETY_FACTOR)
        left = closes - now
        if needed <= left:
            return Decision(
                "go",
                f"window open until {self._local(closes)} ({_minutes(left)} left); predicted lock "
                f"{predicted_lock_s:.1f} s fits",
                opens,
                closes,
            )
        too_short = (
            f"predicted lock {predicted_lock_s:.1f} s (x{SAFETY_FACTOR} margin) does not fit in the "
            f"{_minutes(left)} left of the window closing at {self._local(closes)}"
        )
        if (
            self.kind == "daily"
            and self.on_passed == "wait_next"
            and self.can_ever_fit(predicted_lock_s)
        ):
            local_day = opens.astimezone(self.zone).date() + dt.timedelta(days=1)
            next_opens, next_closes = self.daily_opening(local_day)
            return Decision(
                "wait",
                f"{too_short}; waiting for the next window at {self._local(next_opens)}",
                next_opens,
                next_closes,
            )
        return Decision("refuse", too_short)

    def _never_fits(self, predicted_lock_s: float) -> str:
        return (
            f"predicted lock {predicted_lock_s:.1f} s (x{SAFETY_FACTOR} margin) is longer than the "
            f"whole {self.minutes}-minute window: it can never fit; widen window_minutes"
        )

    def describe(self) -> str:
        every = "daily at " if self.kind == "daily" else ""
        return f"{every}{self.start} for {self.minutes} min, {self.timezone}"

    def _local(self, moment: dt.datetime) -> str:
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def _minutes(delta: dt.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s"

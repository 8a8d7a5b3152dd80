"""The maintenance window: go, wait or refuse, with the predicted lock time weighed in."""

from __future__ import annotations

import datetime as dt

import pytest

from rollout.window import MaintenanceWindow, WindowError

UTC = dt.UTC
RUN_STARTED = dt.datetime(2026, 11, 25, 1, 0, tzinfo=UTC)


def at(hour: int, minute: int = 0, day: int = 25) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def test_now_window_opens_with_the_run_and_closes_after_its_length():
    window = MaintenanceWindow("once", "now", 60)
    assert window.decide(at(1, 10), RUN_STARTED, 30).action == "go"
    refused = window.decide(at(2, 1), RUN_STARTED, 30)
    assert refused.action == "refuse" and "has passed" in refused.reason


def test_a_lock_that_does_not_fit_what_is_left_is_refused():
    window = MaintenanceWindow("once", "now", 60)
    # 10 minutes left; 500 s predicted x 1.5 margin = 12.5 min
    decision = window.decide(at(1, 50), RUN_STARTED, 500)
    assert decision.action == "refuse" and "does not fit" in decision.reason
    assert window.decide(at(1, 50), RUN_STARTED, 300).action == "go"


def test_a_future_window_waits_until_it_opens_in_its_own_time_zone():
    window = MaintenanceWindow("once", "2026-11-25 03:00", 120, "Europe/London")
    decision = window.decide(at(1), RUN_STARTED, 10)
    assert decision.action == "wait" and decision.opens_at == at(3)  # London is UTC in November
    assert "in 2 h 0 min" in decision.reason


def test_daily_window_waits_for_tonight_or_the_next_when_too_late():
    window = MaintenanceWindow("daily", "02:00", 60, "UTC", on_passed="wait_next")
    assert window.decide(at(1), RUN_STARTED, 10).opens_at == at(2)
    assert window.decide(at(2, 30), RUN_STARTED, 10).action == "go"
    late = window.decide(at(2, 55), RUN_STARTED, 600)  # 5 min left, 15 min needed
    assert late.action == "wait" and late.opens_at == at(2, day=26)
    strict = MaintenanceWindow("daily", "02:00", 60, "UTC", on_passed="fail")
    assert strict.decide(at(2, 55), RUN_STARTED, 600).action == "refuse"


def test_daily_window_open_across_midnight():
    window = MaintenanceWindow("daily", "23:30", 60, "UTC")
    assert window.decide(at(0, 10), RUN_STARTED, 10).action == "go"


@pytest.mark.parametrize(
    "args",
    [("weekly", "now", 60), ("once", "now", 0), ("daily", "now", 60), ("once", "3pm", 60)],
)
def test_nonsense_is_refused(args):
    with pytest.raises(WindowError):
        MaintenanceWindow(*args).opening(at(1), RUN_STARTED)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# Both days the clocks change, in two zones: (zone, local start, window opens in UTC). A
# 120-minute window lasts 120 real minutes on each; adding minutes to local wall time gave 60
# on the spring days and 180 on the autumn ones.
DST_DAYS = [
    ("Europe/London", "2026-03-29", "01:00", utc(2026, 3, 29, 1, 0)),  # 01:00 is skipped
    ("Europe/London", "2026-10-25", "00:30", utc(2026, 10, 24, 23, 30)),  # BST, then GMT
    ("America/New_York", "2026-03-08", "01:00", utc(2026, 3, 8, 6, 0)),
    ("America/New_York", "2026-11-01", "00:30", utc(2026, 11, 1, 4, 30)),
]


@pytest.mark.parametrize(("zone", "day", "start", "opens"), DST_DAYS)
def test_daily_windows_last_their_length_on_both_dst_days(zone, day, start, opens):
    window = MaintenanceWindow("daily", start, 120, zone)
    got = window.opening(opens - dt.timedelta(minutes=5), RUN_STARTED)
    assert got == (opens, opens + dt.timedelta(minutes=120))
    last_minute = window.decide(opens + dt.timedelta(minutes=119), RUN_STARTED, 10)
    assert last_minute.action == "go" and "1 min 0 s left" in last_minute.reason
    after = window.decide(opens + dt.timedelta(minutes=121), RUN_STARTED, 10)
    assert after.action == "wait" and after.opens_at > opens + dt.timedelta(hours=20)


@pytest.mark.parametrize(("zone", "day", "start", "opens"), DST_DAYS)
def test_one_off_windows_last_their_length_on_both_dst_days(zone, day, start, opens):
    window = MaintenanceWindow("once", f"{day} {start}", 120, zone)
    assert window.opening(opens, RUN_STARTED) == (opens, opens + dt.timedelta(minutes=120))


def test_the_next_daily_window_keeps_its_local_time_across_a_change():
    window = MaintenanceWindow("daily", "03:00", 30, "Europe/London", on_passed="wait_next")
    # 20 min left of Saturday's 03:00 GMT window; Sunday's opens at 03:00 BST = 02:00 UTC.
    late = window.decide(utc(2026, 3, 28, 3, 10), RUN_STARTED, 1200)
    assert late.action == "wait" and late.opens_at == utc(2026, 3, 29, 2, 0)
    assert late.closes_at == utc(2026, 3, 29, 2, 30)


def test_a_lock_longer_than_the_whole_window_is_refused_before_waiting():
    window = MaintenanceWindow("daily", "02:00", 10, "UTC", on_passed="wait_next")
    decision = window.decide(at(1), RUN_STARTED, 600)  # 15 min needed, 10 min window
    assert decision.action == "refuse" and "can never fit" in decision.reason

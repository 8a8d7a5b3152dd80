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

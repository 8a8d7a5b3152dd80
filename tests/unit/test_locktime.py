"""Lock-time prediction from row counts (the arithmetic; measured errors are in benchmarks/)."""

from __future__ import annotations

import pytest

from rollout.errors import RolloutError
from rollout.locktime import predict_lock_seconds
from rollout.migrations import load_bundle, split_lock_phase


def test_same_size_predicts_the_measurement():
    assert predict_lock_seconds(4.0, 100_000, 100_000) == pytest.approx(4.0)


def test_ten_times_the_rows_is_ten_times_the_time():
    assert predict_lock_seconds(2.0, 100_000, 1_000_000) == pytest.approx(20.0)


def test_an_empty_measurement_cannot_predict():
    with pytest.raises(RolloutError, match="measure on a database with data"):
        predict_lock_seconds(0.01, 0, 1_000_000)


def test_both_scripts_mark_their_lock_phase_and_nothing_follows_it_but_the_swap():
    bundle = load_bundle()
    up_before, up_lock = split_lock_phase(bundle.body("up"))
    assert "CREATE OR REPLACE FUNCTION" in up_before and "booking_confirmation_results" in up_before
    assert up_lock.count("ALTER TABLE public.allocations") == 1 and "CREATE" not in up_lock.replace(
        "CREATE INDEX", ""
    )
    down_before, down_lock = split_lock_phase(bundle.body("down"))
    assert "rollback refused" in down_before and "CREATE OR REPLACE FUNCTION" in down_before
    # The cache is dropped before the lock phase: the runner locks allocations first when the
    # down exports (the application's lock order), so it is dropped under that lock anyway,
    # and the online down's lock phase touches allocations only.
    assert "DROP TABLE public.booking_confirmation_results" in down_before
    assert "ADD CONSTRAINT allocations_resource_window_excl" in down_lock
    assert bundle.manifest.lock_tables == ("public.allocations",)

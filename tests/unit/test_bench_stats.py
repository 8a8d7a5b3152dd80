"""The writer-stall benchmark's arithmetic: blocked time is wall-clock time, not a sum."""

from __future__ import annotations

from rollout.workload import WriterStats


def test_blocked_time_counts_overlapping_waits_once():
    stats = WriterStats(
        spans=[
            (0.0, 0.01),  # fast: not blocked
            (1.0, 5.0),  # four writers stuck behind one lock, overlapping
            (1.1, 5.0),
            (2.0, 5.1),
            (10.0, 10.5),  # a separate 0.5 s stall
            (20.0, 20.2),  # 0.2 s: under the 0.25 s line
        ]
    )
    assert abs(stats.blocked_seconds - (4.1 + 0.5)) < 1e-9
    assert stats.max_latency == 4.0
    assert stats.percentile(50) == 0.5  # nearest rank of 0.01, 0.2, 0.5, 3.1, 3.9, 4.0
    assert stats.percentile(100) == 4.0


def test_no_bookings_reports_zero():
    stats = WriterStats()
    assert stats.blocked_seconds == 0.0
    assert stats.max_latency == 0.0
    assert stats.percentile(99) == 0.0

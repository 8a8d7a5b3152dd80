"""The monitoring's regression rule, the arithmetic: which of its three rules decides, on
samples made up to sit on each side of each rule. Measured behaviour on real PostgreSQL, with
and without a CPU neighbour, is in tests/integration/test_probes.py and benchmarks/."""

from __future__ import annotations

import pytest

from rollout import probes
from rollout.errors import RolloutError


def snapshot(server_ms: list[float], control_ms: list[float], plan: str) -> probes.PerfSnapshot:
    """A one-probe snapshot: its decision samples, and summaries that follow from them."""
    median = sorted(server_ms)[len(server_ms) // 2]
    return probes.PerfSnapshot(
        taken_at="2026-11-29T12:00:00+0000",
        database="dbname=p",
        server_version="18",
        parameters=[{}],
        stats={
            "overlap_check": probes.ProbeStats(
                samples=len(server_ms),
                p50_ms=median + 0.1,
                p95_ms=median + 0.2,
                mean_ms=median + 0.1,
                max_ms=median + 0.3,
                server_time_p50_ms=median,
                control_p50_ms=sorted(control_ms)[len(control_ms) // 2],
                buffers_per_call=8.0,
            )
        },
        plans={"overlap_check": probes.ProbePlan(text="", access_paths=[plan])},
        pg_stat_statements="none",
        seconds=1.0,
        samples={
            "overlap_check": probes.ProbeSamples(
                control_rows=2000, server_time_ms=server_ms, control_ms=control_ms
            )
        },
    )


INDEX = "Index Scan on allocations using allocations_resource_window_idx"
SEQ = "Seq Scan on allocations"
# 40 samples a side, with the spread of a real baseline: 0.9-1.1x their median.
SPREAD = [0.9 + 0.2 * i / 39 for i in range(40)]


def decide(before: probes.PerfSnapshot, after: probes.PerfSnapshot) -> probes.ProbeComparison:
    comparison = probes.compare(before, after, threshold=2.0, min_delta_ms=0.5)
    [probe] = comparison.probes
    return probe


def test_a_machine_three_times_slower_is_not_a_regression():
    before = snapshot([1.0 * s for s in SPREAD], [1.0 * s for s in SPREAD], INDEX)
    # Probe and control slowed alike: the old rule saw 3x and +2 ms.
    after = snapshot([3.0 * s for s in SPREAD], [3.0 * s for s in SPREAD], INDEX)
    probe = decide(before, after)
    assert not probe.regressed and probe.decided_by == "effect size"
    assert probe.ratio_server_time == pytest.approx(3.0)
    assert probe.ratio_vs_control == pytest.approx(1.0)


def test_a_probe_slower_against_an_unchanged_control_is_a_regression():
    before = snapshot([1.0 * s for s in SPREAD], [1.0 * s for s in SPREAD], INDEX)
    after = snapshot([5.0 * s for s in SPREAD[::-1]], [1.0 * s for s in SPREAD], SEQ)
    probe = decide(before, after)
    assert probe.regressed and probe.decided_by == "effect size, significance and floor"
    assert probe.ratio_vs_control > 4 and probe.p_value < 1e-10
    assert probe.added_ms > 3.5 and probe.plan_changed
    line = probes.PerfComparison(2.0, 0.5, 0.0, probes=[probe]).line()
    assert line.startswith("regressed: overlap_check 1.00 -> 5.01 ms server time (5.0x against")
    assert "plan now Seq Scan on allocations instead of Index Scan" in line


def test_a_few_slow_samples_are_not_significant():
    before = snapshot([1.0] * 10, [1.0] * 10, INDEX)
    # Half the samples 10x slower (a burst), half a little faster: median 5.45x, but the after
    # samples are not larger than the before ones as a whole.
    after = snapshot([0.9] * 5 + [10.0] * 5, [1.0] * 10, INDEX)
    probe = decide(before, after)
    assert probe.ratio_vs_control > 2 and probe.added_ms > 0.5
    assert not probe.regressed and probe.decided_by == "significance"
    assert probe.p_value > 0.1


def test_a_tenfold_slowdown_of_a_tiny_query_is_under_the_floor():
    before = snapshot([0.02 * s for s in SPREAD], [0.02 * s for s in SPREAD], INDEX)
    after = snapshot([0.2 * s for s in SPREAD], [0.02 * s for s in SPREAD], INDEX)
    probe = decide(before, after)
    assert probe.ratio_vs_control == pytest.approx(10.0, rel=0.05) and probe.p_value < 0.01
    assert not probe.regressed and probe.decided_by == "floor"
    assert "+0.18 ms server time per call <= the 0.5 ms floor" in probe.reason


@pytest.mark.parametrize(
    ("after", "before", "scipy_p"),
    [  # scipy.stats.mannwhitneyu(after, before, alternative="greater").pvalue, scipy 1.17.1
        ([float(x) for x in range(11, 21)], [float(x) for x in range(1, 11)], 9.133589555477501e-05),
        ([1.0, 2, 2, 3, 3, 3, 4, 5, 5, 6, 7], [1.0, 1, 2, 2, 3, 4, 4, 4, 5, 5], 0.24865246473638752),
        ([0.5 + 0.1 * i for i in range(12)], [0.45 + 0.1 * i for i in range(12)], 0.37541594204455847),
        ([1.0] * 10, [1.0] * 12, 1.0),
    ],
)  # fmt: skip
def test_the_significance_test_is_scipys_mann_whitney(after, before, scipy_p):
    assert probes.mann_whitney_greater(after, before) == pytest.approx(scipy_p, rel=1e-12)


def test_a_baseline_without_samples_says_to_take_a_new_one():
    before = snapshot([1.0] * 10, [1.0] * 10, INDEX)
    before.samples = {}
    with pytest.raises(RolloutError, match="take a new one with `rollout probes baseline`"):
        probes.compare(before, snapshot([1.0] * 10, [1.0] * 10, INDEX))

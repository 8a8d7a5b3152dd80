"""The performance probes on real data: an unchanged database is not flagged, not even when a
CPU-burning neighbour starts after the baseline; a dropped index is, with the plan that changed,
neighbour or not; the reports, the decision's evidence, plans and plot land in the artifacts
folder."""

from __future__ import annotations

import datetime as dt
import json
import sys

import pytest
from psycopg.conninfo import conninfo_to_dict

from rollout import db, probes
from rollout.errors import RolloutError
from rollout.paths import PROJECT_ROOT
from rollout.seed import seed_database

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))

from neighbour import cpu_neighbour

# Big enough that a sequential scan of allocations costs milliseconds, not microseconds.
ALLOCATIONS = 50_000
PROBE_NAMES = ["availability", "confirm_path", "day_view", "overlap_check"]


@pytest.fixture(scope="module")
def seeded_template(make_database) -> str:
    dsn = make_database()
    with db.connect(dsn) as conn:
        seed_database(conn, ALLOCATIONS, seed=11, anchor=dt.date(2026, 12, 1))
    return dsn


@pytest.fixture
def seeded_copy(pg_server, seeded_template) -> str:
    """A copy of the seeded database this test may change."""
    template = conninfo_to_dict(seeded_template)["dbname"]
    name = f"{template}_copy"
    dsn = db.create_database(pg_server.admin_dsn, name, template=template)
    yield dsn
    db.drop_database(pg_server.admin_dsn, name)


def preloaded(admin_dsn: str) -> bool:
    with db.connect(admin_dsn) as conn:
        return "pg_stat_statements" in conn.execute("SHOW shared_preload_libraries").fetchone()[0]


def test_unchanged_database_is_not_flagged(pg_server, seeded_template, tmp_path):
    before = probes.baseline(seeded_template, tmp_path / "baseline", repetitions=20)
    assert sorted(before.stats) == PROBE_NAMES
    assert all(s.samples == 20 and 0 < s.p50_ms <= s.p95_ms for s in before.stats.values())

    comparison = probes.monitor(
        seeded_template, tmp_path / "baseline" / "perf-baseline.json", 1.0, 2.0, tmp_path / "after"
    )
    assert comparison.ok, comparison.line()
    assert [p.probe for p in comparison.probes] == PROBE_NAMES
    assert not any(p.plan_changed for p in comparison.probes)
    report = json.loads((tmp_path / "after" / "perf-monitor.json").read_text())
    assert report["ok"] is True
    markdown = (tmp_path / "after" / "perf-monitor.md").read_text()
    assert "Performance after the apply: OK" in markdown
    for folder, name in [("baseline", "perf-baseline.png"), ("after", "perf-monitor.png")]:
        assert (tmp_path / folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in PROBE_NAMES:
        for kind in ("baseline", "monitor"):
            plan = tmp_path / "after" if kind == "monitor" else tmp_path / "baseline"
            assert "actual rows" in (plan / "plans" / kind / f"{name}.txt").read_text()

    # The decision's evidence, per probe: what it read, and which rule decided.
    assert sorted(before.samples) == PROBE_NAMES
    for samples in before.samples.values():
        assert len(samples.server_time_ms) == len(samples.control_ms) == 20
        assert samples.control_rows >= 1000
    for probe in report["comparison"]["probes"]:
        assert probe["decided_by"] in ("effect size", "significance", "floor")
        assert probe["ratio_vs_control"] > 0 and 0 <= probe["p_value"] <= 1
        assert probe["before"]["buffers_per_call"] > 0 and probe["after"]["server_time_p50_ms"] > 0
        assert "against the control" in probe["reason"] and "floor" in probe["reason"]
    assert "| probe | server time p50 before → after |" in markdown
    assert "## What the application saw" in markdown


def drop_allocation_indexes(dsn: str) -> None:
    with db.connect(dsn) as conn:
        # The exclusion constraint's index covers the same columns: both must go.
        conn.execute("ALTER TABLE allocations DROP CONSTRAINT allocations_resource_window_excl")
        conn.execute("DROP INDEX allocations_resource_window_idx")


def assert_overlap_check_flagged_with_its_plan(comparison: probes.PerfComparison) -> None:
    assert not comparison.ok
    flagged = {p.probe: p for p in comparison.regressions}
    assert {"availability", "overlap_check"} <= set(flagged)
    overlap = flagged["overlap_check"]
    assert overlap.plan_changed and "Seq Scan on allocations" in overlap.plan_after
    assert overlap.decided_by == "effect size, significance and floor"
    assert overlap.ratio_vs_control > 2.0 and overlap.p_value < 0.01 and overlap.added_ms > 0.5
    # The work per call, which no neighbour changes, says the same: the table is read whole.
    assert overlap.after.buffers_per_call > 10 * overlap.before.buffers_per_call
    assert "overlap_check" in comparison.line()
    assert "plan now Seq Scan on allocations instead of Index Scan" in comparison.line()


def test_dropped_index_is_flagged_with_the_plan_that_changed(seeded_copy, tmp_path):
    before = probes.baseline(seeded_copy, tmp_path / "baseline", repetitions=20)
    # Either of the two GiST indexes on the same columns serves it before.
    [path] = before.plans["overlap_check"].access_paths
    assert path.startswith("Index Scan on allocations using allocations_resource_window_")
    drop_allocation_indexes(seeded_copy)

    comparison = probes.monitor(seeded_copy, before, 0.0, 2.0, tmp_path / "after")
    assert_overlap_check_flagged_with_its_plan(comparison)
    assert next(p for p in comparison.regressions if p.probe == "overlap_check").ratio_p50 > 2.0
    markdown = (tmp_path / "after" / "perf-monitor.md").read_text()
    assert "REGRESSION" in markdown and "| overlap_check |" in markdown
    assert "**regressed**" in markdown and "| effect size, significance and floor |" in markdown


def test_server_timings_come_from_pg_stat_statements_where_installed(
    pg_server, seeded_copy, tmp_path
):
    if preloaded(pg_server.admin_dsn):
        with db.connect(seeded_copy) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        snapshot = probes.baseline(seeded_copy, tmp_path, repetitions=10)
        assert snapshot.pg_stat_statements.startswith("pg_stat_statements")
        for stats in snapshot.stats.values():
            assert stats.server_calls >= 10  # the probes, and any other call of the query
            assert 0 < stats.server_mean_ms <= stats.p50_ms * 3
    else:
        snapshot = probes.baseline(seeded_copy, tmp_path, repetitions=10)
        assert snapshot.pg_stat_statements == (
            "none (pg_stat_statements is not installed in this database)"
        )
        assert all(s.server_calls is None for s in snapshot.stats.values())
    assert "server timings:" in (tmp_path / "perf-baseline.md").read_text()


def test_bad_input_is_refused_with_what_to_do(fresh_db, seeded_template, tmp_path):
    with pytest.raises(RolloutError, match="no table allocations to probe"):
        probes.baseline(fresh_db, tmp_path / "empty")
    with pytest.raises(RolloutError, match="rollout probes baseline"):
        probes.monitor(seeded_template, tmp_path / "missing.json", 0, 2.0, tmp_path / "m")
    with pytest.raises(RolloutError, match="threshold must be above 1"):
        probes.monitor(seeded_template, tmp_path / "missing.json", 0, 0.5, tmp_path / "m")
    with pytest.raises(RolloutError, match="at least 10 repetitions"):
        probes.baseline(seeded_template, tmp_path / "few", repetitions=5)
    assert not (tmp_path / "m").exists() and not (tmp_path / "few").exists()


def test_a_baseline_without_decision_samples_is_refused_before_the_period(
    seeded_template, tmp_path
):
    """A baseline written by an older pg-rollout has no server-time samples to test against."""
    snapshot = probes.baseline(seeded_template, tmp_path / "baseline", repetitions=10).to_json()
    del snapshot["samples"]
    for stats in snapshot["stats"].values():
        for name in ("server_time_p50_ms", "control_p50_ms", "buffers_per_call"):
            del stats[name]
    (tmp_path / "old.json").write_text(json.dumps(snapshot))
    with pytest.raises(RolloutError, match="take a new one with `rollout probes baseline`"):
        probes.monitor(seeded_template, tmp_path / "old.json", 3600, 2.0, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_cpu_neighbour_started_after_the_baseline_is_not_a_regression(seeded_template, tmp_path):
    """The worst case for a before/after rule: the machine is idle for the baseline and busy
    for the monitoring. Nothing in the database changed, so nothing may be flagged. (Under the
    rule used before issue 15, every probe was: 2.3-114x slower wall-clock medians.)"""
    before = probes.baseline(seeded_template, tmp_path / "baseline", repetitions=20)
    with cpu_neighbour() as neighbour:
        comparison = probes.monitor(seeded_template, before, 1.0, 2.0, tmp_path / "after")
    assert comparison.ok, f"{comparison.line()} beside {neighbour}"
    assert not any(p.plan_changed for p in comparison.probes)


def test_a_dropped_index_is_flagged_beside_a_cpu_neighbour(seeded_copy, tmp_path):
    before = probes.baseline(seeded_copy, tmp_path / "baseline", repetitions=20)
    drop_allocation_indexes(seeded_copy)
    with cpu_neighbour() as neighbour:
        comparison = probes.monitor(seeded_copy, before, 1.0, 2.0, tmp_path / "after")
    assert not comparison.ok, f"not flagged beside {neighbour}"
    assert_overlap_check_flagged_with_its_plan(comparison)

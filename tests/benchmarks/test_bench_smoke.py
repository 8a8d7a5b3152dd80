"""`make bench` at a small scale on each server: every benchmark runs, on real PostgreSQL and a
real Airflow, and reports each figure beside its goal. Timings are not checked here (they live in
benchmarks/README.md); what a reader of the output relies on is."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from rollout.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow


# The benchmarks that run on a local Airflow measure Airflow's part: they run once, on the
# embedded server. Every server still runs all the PostgreSQL benchmarks, and the end-to-end
# fleet tests run Airflow against targets on both servers.
AIRFLOW_BENCHMARKS = ["end to end", "fleet"]


def expected_sections(pg_server) -> list[str]:
    sections = [
        "seeding",
        "lock held and its prediction",
        "lock trace, statement by statement",
        "application queries before and after",
        "regression rule beside a CPU neighbour",
        "writer stall",
        "writer stall, the down",
        "validation",
        "end to end",
        "fleet",
    ]
    if pg_server.label != "embedded-pg18":
        sections = [s for s in sections if s not in AIRFLOW_BENCHMARKS]
    return sections


@pytest.fixture(scope="module")
def smoke_output(pg_server) -> str:
    skip = [] if pg_server.label == "embedded-pg18" else AIRFLOW_BENCHMARKS
    command = [sys.executable, "run.py", "--smoke", "--server", pg_server.admin_dsn]
    result = subprocess.run(
        command + [arg for name in skip for arg in ("--skip", name)],
        cwd=PROJECT_ROOT / "benchmarks",
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_every_benchmark_reports(smoke_output, pg_server):
    sections = re.findall(r"^### (.+)$", smoke_output, flags=re.MULTILINE)
    assert sections == expected_sections(pg_server)


def test_each_figure_stands_beside_its_goal(smoke_output, pg_server):
    airflow_figures = (
        r"DAG run \(success\): [\d.]+ s, of which the gate and window waited [\d.]+ s",
        r"Airflow's overhead [+-][\d.]+ s",
        r"fleet of 3 databases \(success, preloading LocalExecutor\): [\d.]+ s without the gate.s wait .*; 3 applied",
        r"peak memory \(PSS\): api-server \d+ MiB, scheduler \d+ MiB, dag-processor \d+ MiB",
    )
    if pg_server.label != "embedded-pg18":
        airflow_figures = ()
    for figure in (
        r"seed 2,000 allocations: [\d.]+ s, its floor [\d.]+ s: [\d.]+x \(goal <= 1.3x: (met|NOT met)\)",
        r"floor \(a\) the same [\d,]+ rows by COPY, indexes and constraints set aside: [\d.]+ s",
        r"floor \(b\) allocations_resource_window_excl built on them: [\d.]+ s \(in the seed: [\d.]+ s\)",
        r"longest without a progress line: [\d.]+ s \(goal <= 10 s: (met|NOT met)\)",
        r"\| 4,000 \| [\d.]+ s \| [\d.]+ s \| [\d.]+ s \| [\d.]+ (met|NOT met) \| [\d.]+ (met|NOT met) \|",
        r"predicted from 1,000: [\d.]+ s, measured [\d.]+ s, error [+-]\d+% \(goal within ±25%",
        r"\| \d+ \| `ALTER TABLE public.allocations DROP CONSTRAINT [^`]*` \| 1,000 → "
        r"4,000 \| [\d.]+ s \| [\d.]+ s \| [\d.]+ s \| [+-]\d+% \((met|NOT met)\) \|",
        r"\| pair 1 \| [\d.]+ s / [\d.]+ s \| [\d.]+ s / [\d.]+ s \|",
        r"tracing cost \(median of \d+ pairs\): [+-][\d.]+ s on the transaction, "
        r"[+-][\d.]+ s on the lock phase",
        r"our key order: no regression beyond 2x over 4 probes",
        r"\| unchanged database, neighbour started after the baseline: trials flagged "
        r"\(false positives\) \| \d+/1 \| \d+/1 \|",
        r"new rule: \d+ false positives, \d+ dropped indexes missed \(goal: none of either: "
        r"(met|NOT met)\)",
        r"worst stall, ours / naive: [\d.]+ s / [\d.]+ s = [\d.]+ \(goal <= 0.35",
        r"the online apply: worst stall [\d.]+ s \(goal <= 1 s: (met|NOT met)\); wall [\d.]+ s; "
        r"lock held at the swap [\d.]+ s",
        r"validation: [\d.]+ s \(goal < 30 s\), peak memory \d+ MiB \(goal < 1024 MiB\)",
        *airflow_figures,
    ):
        assert re.search(figure, smoke_output), f"missing: {figure}\n{smoke_output}"


def test_the_stall_workload_really_wrote_and_was_blocked(smoke_output):
    """Each apply ran under writers that booked through the real functions without errors; the
    naive apply queued behind the long report and the writers queued behind it (what happened,
    read from pg_blocking_pids while it ran, not how long: a loaded machine changes only that);
    the down's `psql -f` queued the same way or failed as that way may, ours got through."""
    rows = re.findall(
        r"^\| (psql -f, the seed's migration|psql -f, our up.sql|our production apply step) "
        r"\| [\d.]+ s \| ([\d.]+) s \| [\d.]+ s \| [\d.]+ s \| (\d+) \| (\d+) \|$",
        smoke_output,
        flags=re.MULTILINE,
    )
    assert [r[0] for r in rows] == [
        "psql -f, the seed's migration", "psql -f, our up.sql", "our production apply step"
    ]  # fmt: skip
    for how, _, bookings, errors in rows:
        assert int(bookings) > 10, how
        assert int(errors) == 0, how
    assert (
        "psql -f, the seed's migration: done; it waited behind the report: yes; "
        "writers waited behind it: yes"
    ) in smoke_output
    # psql -f down.sql drops the cache, whose foreign keys lock bookings, after its own check
    # has read allocations: a writer half-way through a booking may deadlock with it. That is
    # the hazard our rollback step's lock order avoids, so it is the only writer error the
    # benchmark may report, and that way alone may fail.
    errors = re.findall(r"^  writer error during (.+?): (\w+)", smoke_output, flags=re.MULTILINE)
    assert all(e == ("psql -f down.sql", "DeadlockDetected") for e in errors), errors
    downs = re.findall(
        r"^\| (psql -f down\.sql|our rollback step) \| [\d.]+ s \| ([\d.]+) s \| [\d.]+ s \| "
        r"[\d.]+ s \| (\d+) \| (\d+) \|$",
        smoke_output,
        flags=re.MULTILINE,
    )
    assert [r[0] for r in downs] == ["psql -f down.sql", "our rollback step"]
    assert all(int(bookings) > 10 for _, _, bookings, _ in downs)
    assert int(downs[1][3]) == 0, "our rollback step made a writer fail"
    naive_down = re.search(r"^psql -f down\.sql: (.+)$", smoke_output, flags=re.MULTILINE)
    assert naive_down, smoke_output
    assert naive_down[1].startswith("failed, ERROR:  deadlock detected") or naive_down[1] == (
        "done; it waited behind the report: yes; writers waited behind it: yes"
    ), naive_down[1]
    assert re.search(r"^our rollback step: done;", smoke_output, flags=re.MULTILINE)
    assert re.search(
        r"^the down's worst stall, ours / psql -f: .*; ours held the lock [\d.]+ s, \d+ attempt",
        smoke_output,
        flags=re.MULTILINE,
    )

"""Performance probes: the allocation queries the booking application runs, timed on a target
before the production apply (`baseline`) and again after it (`monitor`), compared per query.

Each probe is a `.sql` file in `sql/probes/queries/`. Timings are taken by the client
(wall time of execute + fetch, p50/p95 over many runs); where the database has
`pg_stat_statements`, the server's own execution time for the same calls is reported beside
them. The plans are kept, so a slower query comes with the reason.
"""

from __future__ import annotations

import io
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from rollout import db
from rollout.artifacts import ArtifactDir, as_artifact_dir
from rollout.errors import RolloutError
from rollout.paths import PROBES_DIR, sql_text

Progress = Callable[[str], None]

DEFAULT_SAMPLES = 8  # parameter sets: different restaurants, tables and days
DEFAULT_REPETITIONS = 40  # timed runs of each probe
DEFAULT_THRESHOLD = 2.0  # p50 after / p50 before that counts as a regression
# Below this many milliseconds of added median time a ratio is noise, not a regression: a
# 0.1 ms query that takes 0.25 ms on a busy machine is not worth a rollback.
DEFAULT_MIN_DELTA_MS = 0.5
PROBE_STATEMENT_TIMEOUT = "30s"
PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True)
class Probe:
    name: str
    sql: str

    @property
    def description(self) -> str:
        lines = []
        for line in self.sql.splitlines():
            if not line.startswith("--"):
                break
            lines.append(line.removeprefix("--").strip())
        return " ".join(lines)


def load_probes(directory: Path = PROBES_DIR / "queries") -> list[Probe]:
    probes = [Probe(path.stem, sql_text(path)) for path in sorted(directory.glob("*.sql"))]
    if not probes:
        raise RolloutError(f"no probe queries in {directory}")
    return probes


@dataclass
class ProbeStats:
    samples: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    max_ms: float
    server_calls: int | None = None
    server_mean_ms: float | None = None

    @classmethod
    def of(cls, timings_ms: list[float], server: tuple[int, float] | None) -> ProbeStats:
        calls, total_ms = server if server else (None, None)
        return cls(
            samples=len(timings_ms),
            p50_ms=percentile(timings_ms, 50),
            p95_ms=percentile(timings_ms, 95),
            mean_ms=statistics.fmean(timings_ms),
            max_ms=max(timings_ms),
            server_calls=calls,
            server_mean_ms=(total_ms / calls) if calls else None,
        )


@dataclass
class ProbePlan:
    text: str
    access_paths: list[str]  # "Index Scan on allocations using allocations_no_overlap", ...


@dataclass
class PerfSnapshot:
    """One measurement of every probe on one target: what `baseline` keeps for `monitor`."""

    taken_at: str
    database: str
    server_version: str
    parameters: list[dict[str, Any]]
    stats: dict[str, ProbeStats]
    plans: dict[str, ProbePlan]
    pg_stat_statements: str  # where it was read, or "none (why not)"
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PerfSnapshot:
        return cls(
            **{
                **data,
                "stats": {k: ProbeStats(**v) for k, v in data["stats"].items()},
                "plans": {k: ProbePlan(**v) for k, v in data["plans"].items()},
            }
        )

    @classmethod
    def load(cls, path: Path | str) -> PerfSnapshot:
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RolloutError(
                f"cannot read the performance baseline {path}: {exc}. Take one with "
                "`rollout probes baseline`"
            ) from exc


@dataclass
class ProbeComparison:
    probe: str
    before: ProbeStats
    after: ProbeStats
    ratio_p50: float
    regressed: bool
    plan_changed: bool
    plan_before: list[str]
    plan_after: list[str]


@dataclass
class PerfComparison:
    threshold: float
    min_delta_ms: float
    period_s: float
    probes: list[ProbeComparison] = field(default_factory=list)

    @property
    def regressions(self) -> list[ProbeComparison]:
        return [p for p in self.probes if p.regressed]

    @property
    def ok(self) -> bool:
        return not self.regressions

    def line(self) -> str:
        if self.ok:
            return f"no regression beyond {self.threshold:g}x over {len(self.probes)} probes"
        return "regressed: " + ", ".join(
            f"{p.probe} {p.before.p50_ms:.2f} -> {p.after.p50_ms:.2f} ms p50 ({p.ratio_p50:.1f}x)"
            for p in self.regressions
        )


def percentile(values: list[float], q: int) -> float:
    if not values:
        raise RolloutError("no timings to summarise")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def sample_parameters(conn: psycopg.Connection, samples: int) -> list[dict[str, Any]]:
    """Parameter sets drawn from the target's own data, as JSON-friendly values."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute(
            sql_text(PROBES_DIR / "sample_parameters.sql"), {"samples": samples}
        ).fetchall()
    if not rows:
        raise RolloutError(
            "the target has no table allocations to probe with: seed it or point the probes at "
            "a database with bookings"
        )
    return [
        {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
        for row in rows
    ]


def _pg_stat_statements_schema(conn: psycopg.Connection) -> tuple[str | None, str]:
    """Where the extension lives and whether it can be read, else why not."""
    row = conn.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension "
        "WHERE extname = 'pg_stat_statements'"
    ).fetchone()
    if row is None:
        return None, "none (pg_stat_statements is not installed in this database)"
    try:
        with conn.transaction():
            _server_counters(conn, row[0], {})
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0]
        return None, f"none (pg_stat_statements cannot be read: {reason})"
    return row[0], f"pg_stat_statements ({row[0]} schema)"


def _server_counters(
    conn: psycopg.Connection, schema: str, query_ids: dict[str, int]
) -> dict[str, tuple[int, float]]:
    query = sql.SQL(sql_text(PROBES_DIR / "pg_stat_statements.sql")).format(
        schema=sql.Identifier(schema)
    )
    by_id = {
        query_id: (calls, total)
        for query_id, calls, total in conn.execute(query, {"query_ids": list(query_ids.values())})
    }
    return {name: by_id[query_id] for name, query_id in query_ids.items() if query_id in by_id}


def _query_id(conn: psycopg.Connection, probe: Probe, params: dict[str, Any]) -> int | None:
    """The id pg_stat_statements files the probe's query under (computed by the server when
    the extension is loaded; the same id for the application's calls of that query)."""
    plan = conn.execute("EXPLAIN (VERBOSE, FORMAT JSON) " + probe.sql, params).fetchone()[0][0]
    return plan.get("Query Identifier")


def _run(cur: psycopg.Cursor, probe: Probe, params: dict[str, Any]) -> None:
    try:
        cur.execute(probe.sql, params)
        cur.fetchall()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0]
        raise RolloutError(
            f"probe {probe.name} failed: {reason} (sql/probes/queries/{probe.name}.sql)"
        ) from exc


def _plan(conn: psycopg.Connection, probe: Probe, params: dict[str, Any]) -> ProbePlan:
    with conn.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, SUMMARY OFF) " + probe.sql, params)
        text = "\n".join(row[0] for row in cur.fetchall())
        cur.execute("EXPLAIN (FORMAT JSON) " + probe.sql, params)
        tree = cur.fetchone()[0][0]["Plan"]
    return ProbePlan(text=text, access_paths=sorted(set(_access_paths(tree))))


def _access_paths(node: dict[str, Any]) -> list[str]:
    paths = []
    relation = f" on {node['Relation Name']}" if "Relation Name" in node else ""
    index = f" using {node['Index Name']}" if "Index Name" in node else ""
    if relation or index:  # a Bitmap Index Scan names its index but not its table
        paths.append(f"{node['Node Type']}{relation}{index}")
    for child in node.get("Plans", []):
        paths.extend(_access_paths(child))
    return paths


def measure(
    dsn: str,
    *,
    parameters: list[dict[str, Any]] | None = None,
    samples: int = DEFAULT_SAMPLES,
    repetitions: int = DEFAULT_REPETITIONS,
    period_s: float = 0.0,
    probes: list[Probe] | None = None,
    progress: Progress | None = None,
) -> PerfSnapshot:
    """Time every probe at least `repetitions` times, and keep going until `period_s` seconds
    have passed (monitoring samples over a period; a baseline does not wait)."""
    say = progress or (lambda _message: None)
    probes = probes or load_probes()
    started = time.monotonic()
    # prepare_threshold=None: every run is planned for its own parameters, as EXPLAIN shows it.
    with db.connect(dsn, prepare_threshold=None, application_name="rollout-probes") as conn:
        conn.execute(f"SET statement_timeout = '{PROBE_STATEMENT_TIMEOUT}'")
        parameters = parameters or sample_parameters(conn, samples)
        schema, pgss = _pg_stat_statements_schema(conn)
        say(
            f"probes: {len(probes)} queries x {len(parameters)} parameter sets; server timings: {pgss}"
        )
        timings: dict[str, list[float]] = {p.name: [] for p in probes}
        with conn.cursor() as cur:
            for probe in probes:  # warm the cache once, untimed, like a live application's
                for params in parameters:
                    _run(cur, probe, params)
            query_ids = {}
            if schema:
                for probe in probes:
                    if (query_id := _query_id(conn, probe, parameters[0])) is not None:
                        query_ids[probe.name] = query_id
            counters_before = _server_counters(conn, schema, query_ids) if schema else {}
            rounds, said_at = 0, 0.0
            while True:
                for probe in probes:
                    params = parameters[rounds % len(parameters)]
                    t0 = time.perf_counter()
                    _run(cur, probe, params)
                    timings[probe.name].append((time.perf_counter() - t0) * 1000)
                rounds += 1
                elapsed = time.monotonic() - started
                if rounds >= repetitions and elapsed >= period_s:
                    break
                if period_s and elapsed - said_at >= PROGRESS_EVERY_S:
                    said_at = elapsed
                    say(f"probes: {rounds} rounds, {max(0.0, period_s - elapsed):.0f} s left")
            counters_after = _server_counters(conn, schema, query_ids) if schema else {}
        stats = {
            p.name: ProbeStats.of(timings[p.name], _delta(counters_before, counters_after, p.name))
            for p in probes
        }
        plans = {p.name: _plan(conn, p, parameters[0]) for p in probes}
        snapshot = PerfSnapshot(
            taken_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            database=db.redact(dsn),
            server_version=str(db.server_version(conn)),
            parameters=parameters,
            stats=stats,
            plans=plans,
            pg_stat_statements=pgss,
            seconds=round(time.monotonic() - started, 3),
        )
    for name, s in stats.items():
        say(
            f"probes: {name:<14} p50 {s.p50_ms:8.3f} ms   p95 {s.p95_ms:8.3f} ms   ({s.samples} runs)"
        )
    return snapshot


def _delta(
    before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]], name: str
) -> tuple[int, float] | None:
    if name not in after:
        return None
    calls0, total0 = before.get(name, (0, 0.0))
    calls1, total1 = after[name]
    # Someone may have reset the counters in between: then the delta is meaningless.
    return (calls1 - calls0, total1 - total0) if calls1 >= calls0 else None


def compare(
    before: PerfSnapshot,
    after: PerfSnapshot,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_delta_ms: float = DEFAULT_MIN_DELTA_MS,
    period_s: float = 0.0,
) -> PerfComparison:
    """A probe regressed when its median grew by more than `threshold` times and by more than
    `min_delta_ms`. The median, not p95, decides: p95 of a few dozen runs on a shared machine
    is mostly the neighbours' noise. Plan changes are reported, never decisive by themselves."""
    if threshold <= 1:
        raise RolloutError(f"threshold must be above 1 (a ratio of medians), not {threshold}")
    comparison = PerfComparison(threshold=threshold, min_delta_ms=min_delta_ms, period_s=period_s)
    for name, was in before.stats.items():
        now = after.stats.get(name)
        if now is None:
            continue
        ratio = now.p50_ms / was.p50_ms if was.p50_ms > 0 else float("inf")
        plan_before = before.plans[name].access_paths if name in before.plans else []
        plan_after = after.plans[name].access_paths if name in after.plans else []
        comparison.probes.append(
            ProbeComparison(
                probe=name,
                before=was,
                after=now,
                ratio_p50=ratio,
                regressed=ratio > threshold and now.p50_ms - was.p50_ms > min_delta_ms,
                plan_changed=plan_before != plan_after,
                plan_before=plan_before,
                plan_after=plan_after,
            )
        )
    return comparison


def baseline(
    dsn: str,
    out: ArtifactDir | Path | str,
    *,
    samples: int = DEFAULT_SAMPLES,
    repetitions: int = DEFAULT_REPETITIONS,
    progress: Progress | None = None,
) -> PerfSnapshot:
    """Time the probes on a target now; write perf-baseline.{json,md,png} and the plans."""
    artifacts = as_artifact_dir(out)
    snapshot = measure(dsn, samples=samples, repetitions=repetitions, progress=progress)
    artifacts.write_json("perf-baseline.json", snapshot.to_json())
    _write_plans(artifacts.subdir("plans/baseline"), snapshot)
    artifacts.write_text("perf-baseline.md", baseline_markdown(snapshot))
    artifacts.write_bytes("perf-baseline.png", plot_png({"baseline": snapshot}))
    return snapshot


def monitor(
    dsn: str,
    before: PerfSnapshot | Path | str,
    period_s: float,
    threshold: float,
    out: ArtifactDir | Path | str,
    *,
    min_delta_ms: float = DEFAULT_MIN_DELTA_MS,
    progress: Progress | None = None,
) -> PerfComparison:
    """Sample the same probes with the baseline's parameters for `period_s` seconds and compare;
    write perf-monitor.{json,md,png} and the plans. The caller decides what a regression does."""
    if threshold <= 1:
        raise RolloutError(f"threshold must be above 1 (a ratio of medians), not {threshold}")
    if period_s < 0:
        raise RolloutError(f"the monitoring period cannot be negative ({period_s} s)")
    if not isinstance(before, PerfSnapshot):
        before = PerfSnapshot.load(before)
    artifacts = as_artifact_dir(out)
    after = measure(
        dsn,
        parameters=before.parameters,
        repetitions=min(s.samples for s in before.stats.values()),
        period_s=period_s,
        probes=[p for p in load_probes() if p.name in before.stats],
        progress=progress,
    )
    comparison = compare(
        before, after, threshold=threshold, min_delta_ms=min_delta_ms, period_s=period_s
    )
    artifacts.write_json(
        "perf-monitor.json",
        {"after": after.to_json(), "comparison": asdict(comparison), "ok": comparison.ok},
    )
    _write_plans(artifacts.subdir("plans/monitor"), after)
    artifacts.write_text("perf-monitor.md", comparison_markdown(before, after, comparison))
    artifacts.write_bytes("perf-monitor.png", plot_png({"baseline": before, "after": after}))
    return comparison


def _write_plans(artifacts: ArtifactDir, snapshot: PerfSnapshot) -> None:
    for name, plan in snapshot.plans.items():
        artifacts.write_text(f"{name}.txt", plan.text + "\n")


def baseline_markdown(snapshot: PerfSnapshot) -> str:
    lines = [
        "# Performance baseline",
        "",
        f"{snapshot.database}, PostgreSQL {snapshot.server_version}, {snapshot.taken_at}; "
        f"{len(snapshot.parameters)} parameter sets; server timings: {snapshot.pg_stat_statements}.",
        "",
        "| probe | runs | p50 ms | p95 ms | server mean ms | access paths |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, s in snapshot.stats.items():
        lines.append(
            f"| {name} | {s.samples} | {s.p50_ms:.3f} | {s.p95_ms:.3f} | "
            f"{_ms(s.server_mean_ms)} | {'; '.join(snapshot.plans[name].access_paths)} |"
        )
    lines += ["", "Plans: `plans/baseline/<probe>.txt`. Plot: `perf-baseline.png`.", ""]
    return "\n".join(lines)


def comparison_markdown(
    before: PerfSnapshot, after: PerfSnapshot, comparison: PerfComparison
) -> str:
    verdict = "OK" if comparison.ok else "REGRESSION"
    lines = [
        f"# Performance after the apply: {verdict}",
        "",
        comparison.line() + ".",
        "",
        f"A probe regresses when its median grows more than {comparison.threshold:g}x and by more "
        f"than {comparison.min_delta_ms:g} ms. Sampled for {after.seconds:.0f} s "
        f"(period {comparison.period_s:g} s) on {after.database}; baseline taken "
        f"{before.taken_at}.",
        "",
        "| probe | p50 before | p50 after | ratio | p95 before | p95 after | server mean "
        "before / after | plan | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for p in comparison.probes:
        lines.append(
            f"| {p.probe} | {p.before.p50_ms:.3f} | {p.after.p50_ms:.3f} | {p.ratio_p50:.2f}x | "
            f"{p.before.p95_ms:.3f} | {p.after.p95_ms:.3f} | {_ms(p.before.server_mean_ms)} / "
            f"{_ms(p.after.server_mean_ms)} | {'changed' if p.plan_changed else 'same'} | "
            f"{'**regressed**' if p.regressed else 'ok'} |"
        )
    changed = [p for p in comparison.probes if p.plan_changed]
    if changed:
        lines += ["", "## Plans that changed", ""]
        for p in changed:
            lines += [
                f"- **{p.probe}**: {'; '.join(p.plan_before)} → {'; '.join(p.plan_after)}",
            ]
    lines += [
        "",
        "Plans: `plans/baseline/` and `plans/monitor/`. Plot: `perf-monitor.png`.",
        "",
    ]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def plot_png(series: dict[str, PerfSnapshot]) -> bytes:
    """Bars of p50 per probe for each series, with p95 as a tick above; log scale, since one
    probe's milliseconds can be another's microseconds."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = list(next(iter(series.values())).stats)
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(names)), 4.0), dpi=100)
    for i, (label, snapshot) in enumerate(series.items()):
        xs = [n + (i - (len(series) - 1) / 2) * width for n in range(len(names))]
        p50 = [snapshot.stats[name].p50_ms for name in names]
        p95 = [snapshot.stats[name].p95_ms for name in names]
        ax.bar(xs, p50, width, label=f"{label} p50")
        ax.scatter(xs, p95, marker="_", s=400, color="black", zorder=3)
    ax.scatter([], [], marker="_", s=200, color="black", label="p95")
    ax.set_xticks(range(len(names)), names)
    ax.set_yscale("log")
    ax.set_ylabel("milliseconds per query (log)")
    ax.set_title("Allocation query probes")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()

"""Performance probes: the allocation queries the booking application runs, timed on a target
before the production apply (`baseline`) and again after it (`monitor`), compared per query.

Each probe is a `.sql` file in `sql/probes/queries/`. What the application sees is timed by the
client (wall time of execute + fetch, p50/p95); where the database has `pg_stat_statements`, the
server's own mean for the same query is reported beside it. The plans are kept, so a slower
query comes with the reason.

How a regression is decided (issue 15)
--------------------------------------
The baseline is taken before the apply and the monitoring after it, so whatever changes the
machine in between looks like a slowdown to a rule that compares two medians. Measured on this
project's 2-core machine with a CPU-burning neighbour started after the baseline and nothing
changed in the database (benchmarks/README.md): the probes' wall-clock medians moved 1.1-119x,
and the rule used until then (median after / before above the threshold and 0.5 ms more)
flagged 79 of 80 such monitorings. So the decision rests on numbers a neighbour cannot move, or
moves on both sides of a ratio alike:

1. Server time. Each decision sample is the probe under `EXPLAIN (ANALYZE, BUFFERS, TIMING
   OFF)`: the planning + execution time the server reports. It leaves out the wait for a CPU
   before the backend runs and the client's own scheduling, which are most of what a neighbour
   adds to a sub-millisecond query and nothing a migration can change. Under the neighbour it
   moved 0.6-2.9x where the wall time moved 1.1-119x.
2. A control. Back to back with every probe sample (in alternating order, the probes shuffled
   each round) the server runs a pure-CPU query (`sql/probes/control.sql`) whose cost the
   baseline matched to that probe's. A sample is read as probe time / control time: the query's
   cost in units of the machine's speed at that moment. A neighbour slows both; a plan change
   only the probe. Measured: 0.55-1.54x beside the neighbour, 3.1-144x after a dropped index.
3. Work per call: shared buffers hit + read per call, from the same EXPLAIN. CPU noise cannot
   change it and a plan that reads the table instead of an index multiplies it (8 -> 864 per
   call for a dropped index at 50,000 allocations). It is evidence in the report, beside the
   plan, and does not decide: a query can get slower without reading more (JIT, a worse join
   over cached rows).

A probe regressed when all three hold:
- effect size: the median of (time / control) after, over the same median before, exceeds
  `threshold` (the DAG's `regression_threshold`, default 2);
- significance: a one-sided Mann-Whitney U test finds the after samples of time / control
  larger than the before samples with p < `alpha` (0.01), so a short burst in a few samples
  cannot carry it;
- floor: the server time it adds per call, at the baseline's machine speed (baseline median
  server time x (ratio - 1)), exceeds `min_delta_ms` (0.5 ms). Half a millisecond of database
  time is less than one round trip between an application and its hosted database: below it
  no request a person makes gets noticeably slower, and a rollback (a window, the lock again)
  would cost more than it saves. A 0.1 ms query that takes 0.3 ms is not worth one.

`pg_stat_statements` deltas are not used to decide: they are one total per query (no samples to
test, no control to pair with), include the application's own calls with other parameters, and
many servers do not preload the extension.
"""

from __future__ import annotations

import io
import json
import math
import random
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
DEFAULT_REPETITIONS = 40  # timed rounds of each probe
# With fewer samples a side the Mann-Whitney test cannot reach p < 0.01 whatever happened
# (5 a side is its floor): a baseline that small could never show a regression.
MIN_REPETITIONS = 10
DEFAULT_THRESHOLD = 2.0  # (time / control) after over before that counts as a regression
DEFAULT_ALPHA = 0.01  # p-value under which a slowdown counts as real (module docstring)
DEFAULT_MIN_DELTA_MS = 0.5  # the floor: server time added per call (module docstring)
PROBE_STATEMENT_TIMEOUT = "30s"
PROGRESS_EVERY_S = 10.0
EXPLAIN_ANALYZE = "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) "
CONTROL_SQL = PROBES_DIR / "control.sql"
# The control's cost is a straight line in its rows: two sizes give it, each the median of a few.
CONTROL_CALIBRATION_ROWS = (1_000, 100_000)
CONTROL_CALIBRATION_RUNS = 5
MAX_CONTROL_ROWS = 25_000_000  # about a second: a probe slower than that needs no finer one


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
    p50_ms: float  # wall time of execute + fetch: what the application sees
    p95_ms: float
    mean_ms: float
    max_ms: float
    server_calls: int | None = None  # pg_stat_statements, where installed
    server_mean_ms: float | None = None
    # What the decision reads (module docstring): EXPLAIN ANALYZE's planning + execution time,
    # the control's beside it, and shared buffers hit + read per call.
    server_time_p50_ms: float | None = None
    control_p50_ms: float | None = None
    buffers_per_call: float | None = None

    @classmethod
    def of(
        cls,
        timings_ms: list[float],
        server: tuple[int, float] | None,
        samples: ProbeSamples | None = None,
        buffers: list[int] | None = None,
    ) -> ProbeStats:
        calls, total_ms = server if server else (None, None)
        return cls(
            samples=len(timings_ms),
            p50_ms=percentile(timings_ms, 50),
            p95_ms=percentile(timings_ms, 95),
            mean_ms=statistics.fmean(timings_ms),
            max_ms=max(timings_ms),
            server_calls=calls,
            server_mean_ms=(total_ms / calls) if calls else None,
            server_time_p50_ms=statistics.median(samples.server_time_ms) if samples else None,
            control_p50_ms=statistics.median(samples.control_ms) if samples else None,
            buffers_per_call=statistics.fmean(buffers) if buffers else None,
        )


@dataclass
class ProbeSamples:
    """One probe's decision samples: its server time and its control's, taken back to back."""

    control_rows: int  # the control's size, matched to the probe's cost in the baseline
    server_time_ms: list[float] = field(default_factory=list)
    control_ms: list[float] = field(default_factory=list)

    def relative(self) -> list[float]:
        """Each sample's time in units of the machine's speed at that moment."""
        return [t / max(c, 1e-6) for t, c in zip(self.server_time_ms, self.control_ms, strict=True)]


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
    samples: dict[str, ProbeSamples] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PerfSnapshot:
        return cls(
            **{
                **data,
                "stats": {k: ProbeStats(**v) for k, v in data["stats"].items()},
                "plans": {k: ProbePlan(**v) for k, v in data["plans"].items()},
                # A baseline written before issue 15 has none; `compare` says what to do.
                "samples": {k: ProbeSamples(**v) for k, v in data.get("samples", {}).items()},
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
    ratio_p50: float  # wall p50 after / before: what the application saw, not the decision
    regressed: bool
    plan_changed: bool
    plan_before: list[str]
    plan_after: list[str]
    # The decision's numbers (module docstring).
    ratio_server_time: float  # server time p50 after / before, without the control
    ratio_vs_control: float  # the effect size: median(time / control) after / before
    p_value: float  # one-sided Mann-Whitney U: after's time / control larger than before's
    added_ms: float  # server time added per call at the baseline's speed, against the floor
    decided_by: str  # the rule that decided: "effect size", "significance", "floor", or all three
    reason: str  # each rule with its numbers, in words


@dataclass
class PerfComparison:
    threshold: float
    min_delta_ms: float
    period_s: float
    alpha: float = DEFAULT_ALPHA
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
            f"{p.probe} {p.before.server_time_p50_ms:.2f} -> {p.after.server_time_p50_ms:.2f} ms "
            f"server time ({p.ratio_vs_control:.1f}x against the control, p {p.p_value:.0e}; "
            f"{_plan_change(p.plan_before, p.plan_after)})"
            for p in self.regressions
        )


def _plan_change(before: list[str], after: list[str]) -> str:
    """What a plan gained and lost, in a few words: "plan now Seq Scan on allocations instead of
    Index Scan on allocations using …"."""
    gained = [path for path in after if path not in before]
    lost = [path for path in before if path not in after]
    if not (gained or lost):
        return "same plan"
    if not lost:
        return f"plan now also {', '.join(gained)}"
    if not gained:
        return f"plan no longer {', '.join(lost)}"
    return f"plan now {', '.join(gained)} instead of {', '.join(lost)}"


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


def _execute(
    cur: psycopg.Cursor, query: str, params: dict[str, Any], where: str
) -> list[tuple[Any, ...]]:
    try:
        cur.execute(query, params)
        return cur.fetchall()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0]
        raise RolloutError(f"{where} failed: {reason}") from exc


def _where(probe: Probe) -> str:
    return f"probe {probe.name} (sql/probes/queries/{probe.name}.sql)"


CONTROL_WHERE = "the control query (sql/probes/control.sql)"


def _run(cur: psycopg.Cursor, probe: Probe, params: dict[str, Any]) -> None:
    _execute(cur, probe.sql, params, _where(probe))


@dataclass(frozen=True)
class _Explained:
    server_time_ms: float  # planning + execution, as the server measured it
    buffers: int  # shared buffers hit + read


def _explain(cur: psycopg.Cursor, query: str, params: dict[str, Any], where: str) -> _Explained:
    [[[document]]] = _execute(cur, EXPLAIN_ANALYZE + query, params, where)
    plan = document["Plan"]
    return _Explained(
        server_time_ms=document["Planning Time"] + document["Execution Time"],
        buffers=plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0),
    )


def _control_rows(
    cur: psycopg.Cursor, probes: list[Probe], parameters: list[dict[str, Any]]
) -> dict[str, int]:
    """For each probe, the control's rows that cost the server about what the probe costs it
    now: a neighbour's effect on a query depends on how long the query runs."""
    control = sql_text(CONTROL_SQL)

    def control_ms(rows: int) -> float:
        return statistics.median(
            _explain(cur, control, {"rows": rows}, CONTROL_WHERE).server_time_ms
            for _ in range(CONTROL_CALIBRATION_RUNS)
        )

    small, large = CONTROL_CALIBRATION_ROWS
    small_ms, large_ms = control_ms(small), control_ms(large)
    per_row_ms = max((large_ms - small_ms) / (large - small), 1e-9)
    fixed_ms = small_ms - per_row_ms * small
    rows = {}
    for probe in probes:
        probe_ms = statistics.median(
            _explain(cur, probe.sql, params, _where(probe)).server_time_ms for params in parameters
        )
        rows[probe.name] = round(
            min(MAX_CONTROL_ROWS, max(small, (probe_ms - fixed_ms) / per_row_ms))
        )
    return rows


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
    control_rows: dict[str, int] | None = None,
    progress: Progress | None = None,
) -> PerfSnapshot:
    """Time every probe in at least `repetitions` rounds, and keep going until `period_s`
    seconds have passed (monitoring samples over a period; a baseline does not wait).

    Each round takes the probes in a shuffled order; each probe is run as the application runs
    it (timed by the client), then under EXPLAIN ANALYZE back to back with its control, the two
    in alternating order. `control_rows` are the baseline's; without them (a baseline) they are
    matched to the probes' cost first."""
    say = progress or (lambda _message: None)
    probes = probes or load_probes()
    started = time.monotonic()
    control = sql_text(CONTROL_SQL)
    # prepare_threshold=None: every run is planned for its own parameters, as EXPLAIN shows it.
    with db.connect(dsn, prepare_threshold=None, application_name="rollout-probes") as conn:
        conn.execute(f"SET statement_timeout = '{PROBE_STATEMENT_TIMEOUT}'")
        parameters = parameters or sample_parameters(conn, samples)
        schema, pgss = _pg_stat_statements_schema(conn)
        say(
            f"probes: {len(probes)} queries x {len(parameters)} parameter sets, each timed beside "
            f"a control; server timings: {pgss}"
        )
        timings: dict[str, list[float]] = {p.name: [] for p in probes}
        buffers: dict[str, list[int]] = {p.name: [] for p in probes}
        with conn.cursor() as cur:
            for probe in probes:  # warm the cache once, untimed, like a live application's
                for params in parameters:
                    _run(cur, probe, params)
            control_rows = control_rows or _control_rows(cur, probes, parameters)
            for probe in probes:  # the control warmed too, as the baseline's calibration did
                _explain(cur, control, {"rows": control_rows[probe.name]}, CONTROL_WHERE)
            decision = {p.name: ProbeSamples(control_rows=control_rows[p.name]) for p in probes}
            query_ids = {}
            if schema:
                for probe in probes:
                    if (query_id := _query_id(conn, probe, parameters[0])) is not None:
                        query_ids[probe.name] = query_id
            counters_before = _server_counters(conn, schema, query_ids) if schema else {}
            # Seeded: the baseline and the monitoring take the probes in the same orders.
            order, rounds, said_at = random.Random(0), 0, 0.0
            while True:
                params = parameters[rounds % len(parameters)]
                for position, probe in enumerate(order.sample(probes, len(probes))):
                    t0 = time.perf_counter()
                    _run(cur, probe, params)
                    timings[probe.name].append((time.perf_counter() - t0) * 1000)
                    probe_run = (probe.sql, params, _where(probe))
                    control_run = (control, {"rows": control_rows[probe.name]}, CONTROL_WHERE)
                    # Back to back, neither first every time: what the machine does then, both see.
                    in_order = [probe_run, control_run][:: 1 if (rounds + position) % 2 else -1]
                    ran = {run[2]: _explain(cur, *run) for run in in_order}
                    probe_ran, control_ran = ran[_where(probe)], ran[CONTROL_WHERE]
                    decision[probe.name].server_time_ms.append(round(probe_ran.server_time_ms, 4))
                    decision[probe.name].control_ms.append(round(control_ran.server_time_ms, 4))
                    buffers[probe.name].append(probe_ran.buffers)
                rounds += 1
                elapsed = time.monotonic() - started
                if rounds >= repetitions and elapsed >= period_s:
                    break
                if period_s and elapsed - said_at >= PROGRESS_EVERY_S:
                    said_at = elapsed
                    say(f"probes: {rounds} rounds, {max(0.0, period_s - elapsed):.0f} s left")
            counters_after = _server_counters(conn, schema, query_ids) if schema else {}
        stats = {
            p.name: ProbeStats.of(
                timings[p.name],
                _delta(counters_before, counters_after, p.name),
                decision[p.name],
                buffers[p.name],
            )
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
            samples=decision,
        )
    for name, s in stats.items():
        say(
            f"probes: {name:<14} p50 {s.p50_ms:8.3f} ms   p95 {s.p95_ms:8.3f} ms   server "
            f"{s.server_time_p50_ms:8.3f} ms   ({s.samples} runs)"
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


def mann_whitney_greater(after: list[float], before: list[float]) -> float:
    """The one-sided p-value that `after` tends to be larger than `before`: the Mann-Whitney U
    test, normal approximation with tie and continuity corrections. The same number as
    `scipy.stats.mannwhitneyu(after, before, alternative="greater")` for samples of the sizes a
    baseline allows (over 8 a side), without scipy's import: 2 s of CPU idle, 26 s beside the
    neighbour the monitoring must see through, in every fleet target's monitoring task."""
    n_after, n_before = len(after), len(before)
    pooled = sorted([(value, True) for value in after] + [(value, False) for value in before])
    n = len(pooled)
    rank_sum_after, tie_term, start = 0.0, 0, 0
    while start < n:  # equal values share the average of their ranks
        end = start
        while end < n and pooled[end][0] == pooled[start][0]:
            end += 1
        average_rank = (start + 1 + end) / 2
        rank_sum_after += average_rank * sum(is_after for _, is_after in pooled[start:end])
        tie_term += (end - start) ** 3 - (end - start)
        start = end
    u_after = rank_sum_after - n_after * (n_after + 1) / 2
    spread = math.sqrt(n_after * n_before / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    if spread == 0:  # every value equal: nothing says after is larger
        return 1.0
    z = (u_after - n_after * n_before / 2 - 0.5) / spread
    return 0.5 * math.erfc(z / math.sqrt(2))  # the normal's upper tail, exact far out


def _require_decision_samples(before: PerfSnapshot) -> None:
    missing = sorted(name for name in before.stats if name not in before.samples)
    if missing:
        raise RolloutError(
            f"the performance baseline taken {before.taken_at} has no server-time samples for "
            f"{', '.join(missing)} (an older pg-rollout wrote it): take a new one with `rollout "
            "probes baseline` (in the DAG: clear baseline_production_perf before the apply)"
        )


def _decide(
    before: ProbeStats,
    samples_before: ProbeSamples,
    samples_after: ProbeSamples,
    *,
    threshold: float,
    min_delta_ms: float,
    alpha: float,
) -> tuple[float, float, float, bool, str, str]:
    """(ratio against the control, p-value, added ms, regressed, rule that decided, reason)."""
    relative_before, relative_after = samples_before.relative(), samples_after.relative()
    ratio = statistics.median(relative_after) / statistics.median(relative_before)
    p_value = mann_whitney_greater(relative_after, relative_before)
    added_ms = before.server_time_p50_ms * (ratio - 1)
    rules = [
        ("effect size", ratio > threshold,
         f"{ratio:.2f}x against the control {'>' if ratio > threshold else '<='} {threshold:g}x"),
        ("significance", p_value < alpha,
         f"p {p_value:.1e} {'<' if p_value < alpha else '>='} {alpha:g}"),
        ("floor", added_ms > min_delta_ms,
         f"{added_ms:+.2f} ms server time per call {'>' if added_ms > min_delta_ms else '<='} "
         f"the {min_delta_ms:g} ms floor"),
    ]  # fmt: skip
    failed = [name for name, holds, _ in rules if not holds]
    decided_by = failed[0] if failed else "effect size, significance and floor"
    return ratio, p_value, added_ms, not failed, decided_by, "; ".join(r for _, _, r in rules)


def compare(
    before: PerfSnapshot,
    after: PerfSnapshot,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_delta_ms: float = DEFAULT_MIN_DELTA_MS,
    period_s: float = 0.0,
    alpha: float = DEFAULT_ALPHA,
) -> PerfComparison:
    """A probe regressed when its server time against the control grew more than `threshold`
    times, significantly (p < `alpha`), adding more than `min_delta_ms` per call (the module
    docstring says why each). Wall times, buffers and plans are reported beside the decision;
    the rule that decided is named for every probe."""
    if threshold <= 1:
        raise RolloutError(f"threshold must be above 1 (a ratio of medians), not {threshold}")
    if not 0 < alpha < 1:
        raise RolloutError(f"alpha is a p-value between 0 and 1, such as 0.01, not {alpha}")
    _require_decision_samples(before)
    comparison = PerfComparison(
        threshold=threshold, min_delta_ms=min_delta_ms, period_s=period_s, alpha=alpha
    )
    for name, was in before.stats.items():
        now = after.stats.get(name)
        if now is None or name not in after.samples:
            continue
        ratio, p_value, added_ms, regressed, decided_by, reason = _decide(
            was,
            before.samples[name],
            after.samples[name],
            threshold=threshold,
            min_delta_ms=min_delta_ms,
            alpha=alpha,
        )
        plan_before = before.plans[name].access_paths if name in before.plans else []
        plan_after = after.plans[name].access_paths if name in after.plans else []
        comparison.probes.append(
            ProbeComparison(
                probe=name,
                before=was,
                after=now,
                ratio_p50=now.p50_ms / was.p50_ms if was.p50_ms > 0 else float("inf"),
                regressed=regressed,
                plan_changed=plan_before != plan_after,
                plan_before=plan_before,
                plan_after=plan_after,
                ratio_server_time=now.server_time_p50_ms / was.server_time_p50_ms,
                ratio_vs_control=ratio,
                p_value=p_value,
                added_ms=added_ms,
                decided_by=decided_by,
                reason=reason,
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
    if repetitions < MIN_REPETITIONS:
        raise RolloutError(
            f"a baseline needs at least {MIN_REPETITIONS} repetitions, not {repetitions}: with "
            "fewer, no slowdown can be told apart from noise (use the default, "
            f"{DEFAULT_REPETITIONS})"
        )
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
    alpha: float = DEFAULT_ALPHA,
    progress: Progress | None = None,
) -> PerfComparison:
    """Sample the same probes with the baseline's parameters and controls for `period_s`
    seconds (and at least as many rounds as the baseline) and compare; write
    perf-monitor.{json,md,png} and the plans. The caller decides what a regression does."""
    if threshold <= 1:
        raise RolloutError(f"threshold must be above 1 (a ratio of medians), not {threshold}")
    if period_s < 0:
        raise RolloutError(f"the monitoring period cannot be negative ({period_s} s)")
    if not isinstance(before, PerfSnapshot):
        before = PerfSnapshot.load(before)
    _require_decision_samples(before)  # before the period is spent, not after
    artifacts = as_artifact_dir(out)
    after = measure(
        dsn,
        parameters=before.parameters,
        repetitions=min(s.samples for s in before.stats.values()),
        period_s=period_s,
        probes=[p for p in load_probes() if p.name in before.stats],
        control_rows={name: s.control_rows for name, s in before.samples.items()},
        progress=progress,
    )
    comparison = compare(
        before,
        after,
        threshold=threshold,
        min_delta_ms=min_delta_ms,
        period_s=period_s,
        alpha=alpha,
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
        "Wall times are what the application sees; the monitoring decides on the server time "
        "(EXPLAIN ANALYZE's planning + execution) read against a pure-CPU control of about the "
        "same cost, timed back to back with it.",
        "",
        "| probe | runs | p50 ms | p95 ms | server mean ms | server time p50 ms | control p50 ms "
        "(rows) | buffers per call | access paths |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, s in snapshot.stats.items():
        lines.append(
            f"| {name} | {s.samples} | {s.p50_ms:.3f} | {s.p95_ms:.3f} | "
            f"{_ms(s.server_mean_ms)} | {_ms(s.server_time_p50_ms)} | "
            f"{_ms(s.control_p50_ms)} ({snapshot.samples[name].control_rows:,}) | "
            f"{s.buffers_per_call:.1f} | {'; '.join(snapshot.plans[name].access_paths)} |"
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
        f"Sampled for {after.seconds:.0f} s (period {comparison.period_s:g} s) on "
        f"{after.database}; baseline taken {before.taken_at}.",
        "",
        "## The decision",
        "",
        "Each probe's server time (planning + execution, from EXPLAIN ANALYZE: the wait for a "
        "CPU is not in it) was taken back to back with a pure-CPU control of about the same "
        "cost, before and after; time / control is the query's cost in units of the machine's "
        "speed at that moment. A probe regresses when three rules hold: **effect size**, time / "
        f"control grew more than {comparison.threshold:g}x (medians); **significance**, a "
        "one-sided Mann-Whitney U test finds it larger after with p < "
        f"{comparison.alpha:g}; **floor**, it adds more than {comparison.min_delta_ms:g} ms of "
        "server time per call at the baseline's speed. *Decided by* names the first rule that "
        "failed, or all three. Buffers (shared hit + read per call) and plans are evidence: a "
        "CPU neighbour cannot change them.",
        "",
        "| probe | server time p50 before → after | control p50 before → after | against the "
        "control | p | added per call | buffers per call before → after | plan | verdict | "
        "decided by |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for p in comparison.probes:
        lines.append(
            f"| {p.probe} | {_ms(p.before.server_time_p50_ms)} → {_ms(p.after.server_time_p50_ms)} "
            f"ms ({p.ratio_server_time:.2f}x) | {_ms(p.before.control_p50_ms)} → "
            f"{_ms(p.after.control_p50_ms)} ms | {p.ratio_vs_control:.2f}x | {p.p_value:.1e} | "
            f"{p.added_ms:+.3f} ms | {p.before.buffers_per_call:.1f} → "
            f"{p.after.buffers_per_call:.1f} | {'changed' if p.plan_changed else 'same'} | "
            f"{'**regressed**' if p.regressed else 'ok'} | {p.decided_by} |"
        )
    lines += ["", *(f"- {p.probe}: {p.reason}." for p in comparison.probes)]
    lines += [
        "",
        "## What the application saw",
        "",
        "Wall time of execute + fetch in the client, and `pg_stat_statements`' mean where it is "
        "installed: what a user waits for, neighbours included. Not what decides.",
        "",
        "| probe | p50 before | p50 after | ratio | p95 before | p95 after | server mean "
        "before / after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in comparison.probes:
        lines.append(
            f"| {p.probe} | {p.before.p50_ms:.3f} | {p.after.p50_ms:.3f} | {p.ratio_p50:.2f}x | "
            f"{p.before.p95_ms:.3f} | {p.after.p95_ms:.3f} | {_ms(p.before.server_mean_ms)} / "
            f"{_ms(p.after.server_mean_ms)} |"
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

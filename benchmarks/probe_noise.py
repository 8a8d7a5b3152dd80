"""Benchmark: the monitoring's regression rule beside a CPU neighbour (issue 15), the rule used
before and the one used now side by side, both reading the same measurements.

    uv run python benchmarks/probe_noise.py [--allocations 50000] [--trials 20]
        [--detections 10] [--dsn ADMIN_DSN]

False positives: on one clone of a seeded database, `trials` times: the probes' baseline with
the machine as it is, then a CPU neighbour started (benchmarks/neighbour.py: a spinner per
core), the monitoring for 1 s (at least as many rounds as the baseline), the neighbour stopped.
Nothing changes in the database: every probe flagged is a false positive, and a trial with one
would have rolled production back.
Detection: `detections` times, on a fresh clone each: the baseline, both GiST indexes on the
allocations' window dropped (benchmarks/sql/drop_window_indexes.sql: all four probes lose their
index), then the monitoring once with the machine as it is and once beside the neighbour.

The old rule: wall-clock median after / before > 2 and more than 0.5 ms added. The new one:
`rollout.probes.compare` (server time against a control; effect size, significance, floor).
Goal: no false positive and every dropped index found, with the new rule.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from neighbour import cpu_neighbour
from scratch import admin_dsn, benchmark_parser, seeded_database, server_label

from rollout import db, probes
from rollout.paths import PROJECT_ROOT

MONITOR_PERIOD_S = 1.0
SETTLE_S = 1.0  # after the neighbour stops, before the next baseline
DROP_INDEXES = PROJECT_ROOT / "benchmarks" / "sql" / "drop_window_indexes.sql"


def old_rule(p: probes.ProbeComparison, comparison: probes.PerfComparison) -> bool:
    """The rule used until issue 15, on the same measurements."""
    return (
        p.ratio_p50 > comparison.threshold
        and p.after.p50_ms - p.before.p50_ms > comparison.min_delta_ms
    )


def new_rule(p: probes.ProbeComparison, comparison: probes.PerfComparison) -> bool:
    return p.regressed


Rule = Callable[[probes.ProbeComparison, probes.PerfComparison], bool]
RULES: dict[str, Rule] = {"old rule": old_rule, "new rule": new_rule}


@dataclass
class Outcomes:
    """Monitorings of one kind, and what each rule flagged in them."""

    comparisons: list[probes.PerfComparison] = field(default_factory=list)

    def trials_flagged(self, rule: Rule) -> int:
        return sum(any(rule(p, c) for p in c.probes) for c in self.comparisons)

    def probes_flagged(self, rule: Rule) -> int:
        return sum(rule(p, c) for c in self.comparisons for p in c.probes)

    @property
    def probe_count(self) -> int:
        return sum(len(c.probes) for c in self.comparisons)

    def ratios(self, measure: str) -> list[float]:
        """Every probe's after / before by one measure: `ratio_p50` (wall, the old rule's),
        `ratio_server_time` (server time alone) or `ratio_vs_control` (the new rule's)."""
        return [getattr(p, measure) for c in self.comparisons for p in c.probes]


@dataclass
class NoiseResults:
    allocations: int
    neighbour: str = ""
    unchanged: Outcomes = field(default_factory=Outcomes)
    dropped_idle: Outcomes = field(default_factory=Outcomes)
    dropped_beside_neighbour: Outcomes = field(default_factory=Outcomes)
    seconds: float = 0.0


def measure_noise(
    admin: str | None,
    allocations: int,
    trials: int,
    detections: int,
    repetitions: int = probes.DEFAULT_REPETITIONS,
) -> NoiseResults:
    started = time.perf_counter()
    results = NoiseResults(allocations)
    with tempfile.TemporaryDirectory() as out:

        def watch(
            dsn: str, before: probes.PerfSnapshot, neighbour: bool, outcomes: Outcomes
        ) -> None:
            if neighbour:
                with cpu_neighbour() as spinners:
                    outcomes.comparisons.append(
                        probes.monitor(dsn, before, MONITOR_PERIOD_S, 2.0, f"{out}/after")
                    )
                results.neighbour = str(spinners)
                time.sleep(SETTLE_S)
            else:
                outcomes.comparisons.append(
                    probes.monitor(dsn, before, MONITOR_PERIOD_S, 2.0, f"{out}/after")
                )

        with seeded_database(admin, allocations) as dsn:
            for _ in range(trials):
                before = probes.baseline(dsn, f"{out}/before", repetitions=repetitions)
                watch(dsn, before, True, results.unchanged)
        for _ in range(detections):
            with seeded_database(admin, allocations) as dsn:
                before = probes.baseline(dsn, f"{out}/before", repetitions=repetitions)
                with db.connect(dsn) as conn:
                    db.run_sql_file(conn, DROP_INDEXES)
                watch(dsn, before, False, results.dropped_idle)
                watch(dsn, before, True, results.dropped_beside_neighbour)
    results.seconds = time.perf_counter() - started
    return results


def noise_table(results: NoiseResults) -> list[str]:
    rows = [
        ("unchanged database, neighbour started after the baseline: trials flagged "
         "(false positives)", results.unchanged, Outcomes.trials_flagged, "trials"),
        ("… probes flagged", results.unchanged, Outcomes.probes_flagged, "probes"),
        ("dropped index, machine as it is: trials flagged (detections)", results.dropped_idle,
         Outcomes.trials_flagged, "trials"),
        ("… probes flagged (all four lose their index)", results.dropped_idle,
         Outcomes.probes_flagged, "probes"),
        ("dropped index, beside the neighbour: trials flagged", results.dropped_beside_neighbour,
         Outcomes.trials_flagged, "trials"),
        ("… probes flagged", results.dropped_beside_neighbour, Outcomes.probes_flagged, "probes"),
    ]  # fmt: skip
    lines = [
        f"{results.allocations:,} allocations; neighbour: {results.neighbour or 'none'}; "
        f"{results.seconds:.0f} s",
        "",
        "| monitorings | " + " | ".join(RULES) + " |",
        "|---|" + "---:|" * len(RULES),
    ]
    for label, outcomes, count, unit in rows:
        total = len(outcomes.comparisons) if unit == "trials" else outcomes.probe_count
        cells = [f"{count(outcomes, rule)}/{total}" for rule in RULES.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", *ratio_lines(results)]
    false_positives = results.unchanged.trials_flagged(new_rule)
    missed = sum(
        len(o.comparisons) - o.trials_flagged(new_rule)
        for o in (results.dropped_idle, results.dropped_beside_neighbour)
    )
    verdict = "met" if false_positives == 0 and missed == 0 else "NOT met"
    lines.append(
        f"new rule: {false_positives} false positives, {missed} dropped indexes missed "
        f"(goal: none of either: {verdict})"
    )
    return lines


def ratio_lines(results: NoiseResults) -> list[str]:
    """How far each measure stayed from the 2x threshold: the margin behind the counts, and
    what the control adds to server time alone."""

    def spread(outcomes: Outcomes, measure: str) -> str:
        values = outcomes.ratios(measure)
        return f"{min(values):.2f}-{max(values):.2f}x" if values else "-"

    return [
        f"ratios seen ({kind}): wall p50 {spread(outcomes, 'ratio_p50')} (old rule); server "
        f"time alone {spread(outcomes, 'ratio_server_time')}; server time against the control "
        f"{spread(outcomes, 'ratio_vs_control')} (new rule)"
        for kind, outcomes in (
            ("unchanged, neighbour", results.unchanged),
            ("dropped index, as it is", results.dropped_idle),
            ("dropped index, neighbour", results.dropped_beside_neighbour),
        )
    ]


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--allocations", type=int, default=50_000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--detections", type=int, default=10)
    args = parser.parse_args()
    results = measure_noise(args.dsn, args.allocations, args.trials, args.detections)
    print(server_label(admin_dsn(args.dsn)))
    print("\n".join(noise_table(results)))


if __name__ == "__main__":
    main()

"""`make bench`: every benchmark on every server, each figure printed beside its goal.

    uv run python benchmarks/run.py [--server embedded] [--server ADMIN_DSN …] [--smoke]

Servers default to the embedded PostgreSQL 18 and the PostgreSQL at 127.0.0.1:5432 (skipped,
saying so, when it does not answer). Each benchmark measures its sides in one run, on clones
of one seeded database per size. `--smoke` runs everything at a small scale: it checks that
the benchmarks run and report (CI does this), not the figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import e2e
import fleet
import lock_trace
import locktime
import probe_noise
import probes
import seed
import stall
import validation
from scratch import EMBEDDED, admin_dsn, drop_templates, server_label

from rollout import db
from rollout.clusters import stop_cluster
from rollout.errors import TargetUnavailable

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Scale:
    seed: int
    validation: int
    lock_small: int
    lock_large: int
    probes: int
    stall: int
    reader_s: float
    end_to_end: int
    fleet: int
    noise: int  # allocations for the regression rule beside a CPU neighbour
    noise_trials: int  # unchanged monitorings beside it
    noise_detections: int  # dropped indexes


FULL = Scale(
    1_000_000, 1_000_000, 100_000, 1_000_000, 1_000_000, 1_000_000, 20.0, 100_000, 100,
    50_000, 20, 10,
)  # fmt: skip
SMOKE = Scale(2_000, 2_000, 1_000, 4_000, 2_000, 2_000, 2.0, 2_000, 3, 2_000, 1, 1)


def benchmarks(scale: Scale) -> list[tuple[str, Callable[[str], list[str]]]]:
    def lock(admin: str) -> list[str]:
        small = locktime.measure_lock_times(admin, scale.lock_small)
        large = locktime.measure_lock_times(admin, scale.lock_large)
        return [*locktime.lock_table([small, large]), locktime.prediction_line(small, large)]

    return [
        ("seeding", lambda a: seed.seed_lines(seed.measure_seed(a, scale.seed))),
        ("lock held and its prediction", lock),
        ("lock trace, statement by statement", lambda a: lock_trace.trace_lines(
            lock_trace.measure_trace(a, scale.lock_small, scale.lock_large))),
        ("application queries before and after", lambda a: probes.probe_table(
            probes.measure_probes(a, scale.probes))),
        ("regression rule beside a CPU neighbour", lambda a: probe_noise.noise_table(
            probe_noise.measure_noise(a, scale.noise, scale.noise_trials,
                                      scale.noise_detections))),
        ("writer stall", lambda a: stall.stall_table(
            stall.run_stall(a, scale.stall, scale.reader_s, ("naive", "script", "step", "online")))),
        ("writer stall, the down", lambda a: stall.stall_table(
            stall.run_down_stall(a, scale.stall, scale.reader_s))),
        ("validation", lambda a: validation.validation_lines(
            validation.measure_validation(a, scale.validation))),
        ("end to end", lambda a: e2e.end_to_end_lines(
            e2e.measure_end_to_end(a, scale.end_to_end))),
        ("fleet", lambda a: fleet.fleet_lines(fleet.measure_fleet(a, scale.fleet))),
    ]  # fmt: skip


def reachable(server: str) -> bool:
    try:
        with db.connect(admin_dsn(server)):
            return True
    except TargetUnavailable as exc:
        print(f"skipped {server}: {exc}")
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", action="append", help="embedded, or an admin DSN")
    parser.add_argument("--smoke", action="store_true", help="small scale: runs, not figures")
    parser.add_argument("--only", action="append", help="run only benchmarks named like this")
    parser.add_argument("--skip", action="append", help="skip the benchmarks named like this")
    args = parser.parse_args()
    scale = SMOKE if args.smoke else FULL
    servers = [s for s in (args.server or [EMBEDDED, LOCAL_SERVER]) if reachable(s)]
    if not servers:
        print("no server to benchmark on")
        return 2
    for server in servers:
        admin = admin_dsn(server)
        print(f"\n## {server_label(admin)}{' (smoke scale)' if args.smoke else ''}", flush=True)
        for name, bench in benchmarks(scale):
            if args.only and not any(o in name for o in args.only):
                continue
            if args.skip and any(o in name for o in args.skip):
                continue
            started = time.perf_counter()
            print(f"\n### {name}", flush=True)
            print("\n".join(bench(admin)))
            print(f"({time.perf_counter() - started:.0f} s)", flush=True)
    drop_templates()
    stop_cluster("bench")  # the embedded cluster the benchmarks started, if they did
    return 0


if __name__ == "__main__":
    sys.exit(main())

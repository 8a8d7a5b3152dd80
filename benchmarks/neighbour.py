"""A CPU-burning neighbour on this machine: one spinning process pinned to each core.

What the performance monitoring must not mistake for a regression (domain.md: "a query that
takes 0.6 ms median can take 1.2 ms when a neighbour uses the CPU"). Used by the probes'
tests and by `benchmarks/probe_noise.py`.

The spinners run at nice -10 when allowed (root or CAP_SYS_NICE). At the default priority
they do not reproduce the problem on this machine: Linux 6.18's EEVDF scheduler lets a
waking PostgreSQL backend preempt an equal-priority spinner at once, and beside 2, 4 or 8 such
spinners the probes' medians stayed at 0.7-1.9x their idle ones, most near 1x. A neighbour that
wins the CPU (a higher-priority process, or a hypervisor taking the core: steal time) makes the
same probes 2-114x slower, more than the 2.2-2.4x issue 15 saw. Where the priority cannot be
raised, the spinners run at the default one and `Neighbour.nice` says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

NICE = -10
# A spinner outlives its parent by at most one check (a few ms of spinning) and never runs
# longer than this: a killed test must not leave the machine's cores taken.
MAX_SECONDS = 300

SPINNER = """
import os, time
deadline = time.monotonic() + {max_seconds}
os.sched_setaffinity(0, {{{core}}})
try:
    os.nice({nice})
except PermissionError:
    pass
print(os.nice(0), flush=True)
while os.getppid() == {parent} and time.monotonic() < deadline:
    for _ in range(200_000):
        pass
"""


@dataclass(frozen=True)
class Neighbour:
    cores: list[int]
    nice: int  # the priority the spinners got (NICE, or 0 where it could not be raised)

    def __str__(self) -> str:
        return f"{len(self.cores)} spinners (one per core) at nice {self.nice}"


@contextmanager
def cpu_neighbour(nice: int = NICE) -> Iterator[Neighbour]:
    """Spin every core this process may use until the block ends; stopped whatever happens."""
    cores = sorted(os.sched_getaffinity(0))
    spinners: list[subprocess.Popen[str]] = []
    try:
        for core in cores:
            code = SPINNER.format(core=core, nice=nice, parent=os.getpid(), max_seconds=MAX_SECONDS)
            spinners.append(
                subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            )
        # Each spinner says its priority once it is pinned and reniced, then burns.
        priorities = {int(spinner.stdout.readline() or 0) for spinner in spinners}
        yield Neighbour(cores=cores, nice=min(priorities))
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()
            spinner.stdout.close()

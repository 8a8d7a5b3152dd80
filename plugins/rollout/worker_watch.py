"""A step that outlives its Airflow worker must not go on and commit.

An Airflow task runs in a process its worker (the supervisor) started. When the worker dies,
Airflow loses sight of the task: it shows it running until the heartbeat times out, then fails
it, and the rollback that follows would race a task that is still applying. So a step that
changes a database watches its parent process: when it is gone, the running statement is
cancelled and the transaction is never committed (`check()` before COMMIT raises).

When the task process itself dies, its session goes with it: `client_connection_check_interval`
(see `rollout.steps`) makes the server notice the closed connection while a statement waits for
a lock or runs, and end it, releasing what it held.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType

import psycopg

from rollout.errors import RolloutError

POLL_S = 0.5


class WorkerLost(RolloutError):
    """The task's worker died: the step stopped without committing."""


class WorkerWatch:
    """Watch this process's parent while a step's connection works; `check()` before COMMIT."""

    def __init__(self, conn: psycopg.Connection, *, enabled: bool = True) -> None:
        self.conn = conn
        self.enabled = enabled
        self.parent = os.getppid()
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="worker-watch")

    def __enter__(self) -> WorkerWatch:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * POLL_S)

    def _watch(self) -> None:
        while not self._done.wait(POLL_S):
            if os.getppid() != self.parent:
                self.lost.set()
                self.conn.cancel_safe()  # the running statement ends; nothing commits
                return

    def check(self) -> None:
        if self.lost.is_set() or (self.enabled and os.getppid() != self.parent):
            self.lost.set()
            raise WorkerLost(
                f"this task's worker (pid {self.parent}) died while the step ran: Airflow no "
                "longer follows this task, so it stopped without committing; nothing changed"
            )

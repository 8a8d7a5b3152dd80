"""A rollout run as its steps see it: its settings, its targets' DSNs, its folder of artifacts,
who and which run it is; and how a step opens a session on a target."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from rollout import bundle_snapshot, db, ledger
from rollout.artifacts import ArtifactDir
from rollout.errors import TargetUnavailable
from rollout.migrations import MigrationBundle
from rollout.settings import RolloutSettings

Progress = Callable[[str], None]


TARGETS = ("staging", "production")


# Every session of a step asks the server to check, this often while a statement runs or waits
# for a lock, that the step's process is still there: a killed task's session ends within it,
# and with it its transaction, its locks and the rollout's advisory lock.
CLIENT_CHECK_INTERVAL = "2s"


@dataclass
class Run:
    settings: RolloutSettings
    dsns: dict[str, str]  # target name -> DSN
    artifacts: ArtifactDir  # this run's folder
    run_id: str
    actor: str | None = None
    progress: Progress = field(default=print)
    dag_id: str | None = None
    # Who commits a change (host, pid, task and try): kept in the ledger row.
    session: dict[str, Any] = field(default_factory=dict)
    # Whether another run's lease has gone stale (its run ended); None: never assumed.
    is_stale: ledger.StaleCheck | None = None
    # Airflow tasks: a step stops without committing when its worker process dies.
    watch_worker: bool = False
    # Where the run's copy of its bundle lives (rollout.bundle_snapshot): the run's own folder;
    # a fleet target's Run, with a folder of its own, keeps its run's.
    bundle_home: ArtifactDir | None = None
    # The copy, once read (verified against its checksum once per process).
    _snapshot: MigrationBundle | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.bundle_home is None:
            self.bundle_home = self.artifacts

    @property
    def snapshot(self) -> MigrationBundle | None:
        """The copy of the bundle this run's preflight kept, or None before preflight."""
        if self._snapshot is None:
            self._snapshot = bundle_snapshot.load(self.bundle_home)
        return self._snapshot

    @property
    def bundle(self) -> MigrationBundle:
        """The bundle this run applies: the copy its preflight kept, once it has; the folder on
        disk (the settings') before."""
        return self.snapshot or self.settings.bundle

    def require_unchanged_bundle(self, step: str) -> None:
        """Refuse the step when the bundle folder was edited since preflight (BundleChanged,
        naming both checksums); nothing is touched."""
        bundle_snapshot.require_unchanged(
            self.snapshot, self.settings.bundle, self.bundle_home, step
        )

    def say(self, message: str) -> None:
        self.progress(message)

    def folder(self, target: str, *parts: str) -> ArtifactDir:
        return self.artifacts.subdir("/".join((target, *parts)))

    def dsn(self, target: str) -> str:
        """The target's DSN, or TargetUnavailable saying why there is none (a connection that
        is not defined: the run still reports and rolls back what it can)."""
        dsn = self.dsns.get(target)
        if dsn is None:
            raise TargetUnavailable(f"{target}: this run has no connection for it")
        if type(dsn) is not str:  # an unresolved connection carries its reason, not a DSN
            raise TargetUnavailable(str(dsn))
        return dsn

    def connect(self, target: str, purpose: str) -> psycopg.Connection:
        return connect_step(self.dsn(target), purpose, self.run_id)

    def conn_id(self, target: str) -> str:
        s = self.settings
        return {"staging": s.staging_conn_id, "production": s.production_conn_id}.get(
            target, target
        )


def connect_step(dsn: str, purpose: str, run_id: str) -> psycopg.Connection:
    """A step's session on dsn (and a benchmark's, to apply as the steps do): named for what it
    does, checked by the server for a dead client. A transaction-mode pooler is refused before
    anything is set there (rollout.pooler): the step's lock and settings would stay on a server
    connection the application then uses."""
    return db.connect(
        dsn,
        application_name=session_name(purpose, run_id),
        session_settings={"client_connection_check_interval": CLIENT_CHECK_INTERVAL},
        session_only=True,
    )


def session_name(purpose: str, run_id: str) -> str:
    """application_name of a step's session: what it does, its process and its run, so a person
    reading pg_stat_activity knows whose it is (PostgreSQL keeps 63 bytes)."""
    return f"rollout-{purpose} p{os.getpid()} {run_id}"[:63]


def default_session() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}

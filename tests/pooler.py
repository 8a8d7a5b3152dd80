"""A real PgBouncer (Debian's `pgbouncer` package) in front of a test server: the two pooled
paths a Supabase project offers, transaction mode (its port 6543) and session mode, for any
database of that server. `start_pgbouncer` is the fixture's worker; tests use the `pgbouncer`
fixture (tests/conftest.py)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

PGBOUNCER_BINARIES = ("pgbouncer", "/usr/sbin/pgbouncer")
# Smaller than the clients the tests start, as in production: clients take turns.
TRANSACTION_POOL_SIZE = 3
SESSION_POOL_SIZE = 10


def pgbouncer_binary() -> str | None:
    for name in PGBOUNCER_BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass(frozen=True)
class Pgbouncer:
    """PgBouncer in front of one server: `via(dsn, mode)` is dsn's database through it."""

    transaction_port: int
    session_port: int

    def via(self, dsn: str, mode: str = "transaction") -> str:
        port = {"transaction": self.transaction_port, "session": self.session_port}[mode]
        params = conninfo_to_dict(dsn)
        params.update(host="127.0.0.1", port=str(port))
        return make_conninfo(**params)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(server_dsn: str, port: int, mode: str, pool_size: int, folder: Path) -> Path:
    server = conninfo_to_dict(server_dsn)
    host = server.get("host") or "127.0.0.1"
    users = folder / f"users-{mode}.txt"
    users.write_text('"postgres" ""\n')
    ini = folder / f"pgbouncer-{mode}.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={host} port={server.get('port') or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {users}\n"
        f"pool_mode = {mode}\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n"
        # PgBouncer's default: the server connection released last is handed out first.
        "server_round_robin = 0\n"
    )
    for path in (users, ini):
        path.chmod(0o644)
    return ini


def _wait_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited: {log.read_text()[-500:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"pgbouncer did not listen on {port}: {log.read_text()[-500:]}")


@contextmanager
def start_pgbouncer(binary: str, server_dsn: str) -> Iterator[Pgbouncer]:
    """Two PgBouncers (transaction mode, pool of TRANSACTION_POOL_SIZE; session mode) in front
    of server_dsn's server, stopped on the way out."""
    # PgBouncer will not run as root: it runs as the server's own user then (the owner of its
    # socket folder, which only that user may enter; else `postgres`), from a folder that user
    # can read (pytest's own tmp folders are not).
    as_user = ["-u", _server_user(server_dsn)] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="rollout-pgbouncer-"))
    folder.chmod(0o755)
    processes: list[subprocess.Popen] = []
    try:
        ports = {}
        for mode, size in (("transaction", TRANSACTION_POOL_SIZE), ("session", SESSION_POOL_SIZE)):
            port = _free_port()
            ini = _config(server_dsn, port, mode, size, folder)
            log = folder / f"{mode}.log"
            with log.open("w") as out:
                process = subprocess.Popen(
                    [binary, *as_user, str(ini)], stdout=out, stderr=subprocess.STDOUT
                )
            processes.append(process)
            _wait_listening(process, port, log)
            ports[mode] = port
        yield Pgbouncer(ports["transaction"], ports["session"])
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _server_user(server_dsn: str) -> str:
    host = str(conninfo_to_dict(server_dsn).get("host") or "")
    if host.startswith("/"):
        return pwd.getpwuid(os.stat(host).st_uid).pw_name
    return "postgres"

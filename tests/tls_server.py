"""A private PostgreSQL that takes TLS only, as a hosted production does: started from the
system's PostgreSQL binaries (the embedded wheel's server is built without SSL), listening on
127.0.0.1 with hostssl, scram-sha-256 and a client certificate (CN = the user); plain TCP is
refused. Its Unix socket stays trusted, for the test's own set-up."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.tls_certs import CertificateAuthority

SYSTEM_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class TlsCluster:
    admin_dsn: str  # the Unix socket: trust
    host: str
    port: int
    ca: CertificateAuthority


def system_binaries() -> Path | None:
    """The system's PostgreSQL binaries, when installed and built with OpenSSL."""
    config = SYSTEM_BIN / "pg_config"
    if not config.is_file():
        return None
    configure = subprocess.run([config, "--configure"], capture_output=True, text=True).stdout
    return SYSTEM_BIN if "--with-openssl" in configure else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def tls_cluster() -> Iterator[TlsCluster]:
    """Start the cluster; stop it and delete its files on the way out."""
    binaries = system_binaries()
    assert binaries is not None, "no system PostgreSQL with OpenSSL"
    # The server may not run as root: as root, it runs as the system's `postgres` user, in a
    # folder that user can reach (pytest's own temp root is private to root).
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="rollout-tls-"))
    root.chmod(0o755)
    as_owner = ["runuser", "-u", "postgres", "--"] if owner else []
    try:
        (root / "client-side").mkdir()
        ca = CertificateAuthority(root / "client-side")  # the client's files stay root's
        server = ca.issue("server", "localhost", server=True)
        server_side = root / "server"
        server_side.mkdir()
        for source in (server.cert, server.key, ca.issued.cert):
            shutil.copy(source, server_side / source.name)
            (server_side / source.name).chmod(0o600)
        pgdata, sockets = root / "pgdata", root / "sockets"
        sockets.mkdir()
        pgdata.mkdir(mode=0o700)
        if owner:
            for path in (server_side, sockets, pgdata, *server_side.iterdir()):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        subprocess.run(
            [*as_owner, binaries / "initdb", "-D", pgdata, "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip
        port = _free_port()
        with (pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                f"unix_socket_directories = '{sockets}'\n"
                f"ssl = on\nssl_cert_file = '{server_side / 'server.crt'}'\n"
                f"ssl_key_file = '{server_side / 'server.key'}'\n"
                f"ssl_ca_file = '{server_side / 'ca.crt'}'\n"
                "shared_preload_libraries = 'pg_stat_statements'\nfsync = off\n"
            )
        (pgdata / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-full\n"
            "hostnossl all all 127.0.0.1/32 reject\n"
        )
        log = pgdata / "server.log"
        started = subprocess.run(
            [*as_owner, binaries / "pg_ctl", "-D", pgdata, "-w", "-l", log, "start"],
            capture_output=True, text=True,
        )  # fmt: skip
        if started.returncode:
            raise RuntimeError(f"the TLS server did not start: {log.read_text()[-2000:]}")
        try:
            admin = f"host={sockets} port={port} user=postgres dbname=postgres"
            yield TlsCluster(admin, "127.0.0.1", port, ca)
        finally:
            subprocess.run(
                [*as_owner, binaries / "pg_ctl", "-D", pgdata, "-w", "-m", "fast", "stop"],
                capture_output=True,
            )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)

"""TLS as production has it: the embedded PostgreSQL listening on 127.0.0.1 with TLS only
(hostssl, scram-sha-256 and a client certificate; plain TCP refused), reached with
`sslmode=verify-full` and a CA this test makes. Every step of the rollout runs over it, Great
Expectations and the assignment suite's child process included; the password and the client
key's path reach no artifact, no progress line and no step result (what becomes an XCom)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from rollout import db, steps
from rollout.baseline import apply_baseline
from rollout.errors import TargetUnavailable
from rollout.run import TARGETS
from rollout.seed import seed_database
from tests.target_state import make_run, migrated, outcomes
from tests.tls_certs import CertificateAuthority
from tests.tls_server import system_binaries, tls_cluster

SENTINEL = f"tls-s3ntinel-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class TlsServer:
    admin_dsn: str  # the Unix socket, trusted: for the test's own set-up and checks
    tcp: dict[str, str]  # host, port, user, password, sslmode, sslrootcert, sslcert, sslkey
    key_path: str
    ca: CertificateAuthority

    def dsn(self, dbname: str, **changes: str) -> str:
        return make_conninfo(**{**self.tcp, "dbname": dbname, **changes})


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsServer]:
    if system_binaries() is None:
        pytest.skip("no system PostgreSQL built with OpenSSL (/usr/lib/postgresql/15/bin)")
    with tls_cluster() as cluster:
        client = cluster.ca.issue("client", "postgres", server=False)  # CN: its user
        with db.connect(cluster.admin_dsn) as conn:
            conn.execute(f"ALTER ROLE postgres PASSWORD '{SENTINEL}'")
        tcp = {
            "host": cluster.host, "port": str(cluster.port), "user": "postgres",
            "password": SENTINEL, "sslmode": "verify-full",
            "sslrootcert": str(cluster.ca.issued.cert), "sslcert": str(client.cert),
            "sslkey": str(client.key),
        }  # fmt: skip
        yield TlsServer(cluster.admin_dsn, tcp, str(client.key), cluster.ca)


@pytest.fixture(scope="module")
def tls_targets(tls_server: TlsServer) -> dict[str, str]:
    """Staging and production databases on the TLS server, seeded; their TLS DSNs."""
    dsns = {}
    for name in TARGETS:
        dbname = f"tls_{name}"
        db.create_database(tls_server.admin_dsn, dbname)
        with db.connect(db.with_database(tls_server.admin_dsn, dbname)) as conn:
            apply_baseline(conn)
            seed_database(conn, 1500, seed=11, anchor=dt.date(2026, 12, 1))
        dsns[name] = tls_server.dsn(dbname)
    return dsns


def test_the_server_takes_tls_only_and_checks_who_it_is(tls_server, tls_targets):
    dsn = tls_targets["staging"]
    with db.connect(dsn) as conn:
        ssl, version = conn.execute(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert ssl is True and version.startswith("TLSv1.")
    with pytest.raises(TargetUnavailable, match=r"no encryption"):
        db.connect(tls_server.dsn("tls_staging", sslmode="disable"))
    other_ca = CertificateAuthority(_folder_beside(tls_server, "other-ca"))
    with pytest.raises(TargetUnavailable, match="SSL error"):
        db.connect(tls_server.dsn("tls_staging", sslrootcert=str(other_ca.issued.cert)))
    # A client key libpq cannot read: the message says so without saying where it lies.
    missing_key = f"/nonexistent/{uuid.uuid4().hex}/client.key"
    with pytest.raises(TargetUnavailable, match="private key") as refused:
        db.connect(tls_server.dsn("tls_staging", sslkey=missing_key))
    assert missing_key not in str(refused.value)
    # verify-full checks the name: the certificate is for localhost and 127.0.0.1 only.
    with pytest.raises(TargetUnavailable, match="does not match host name"):
        db.connect(tls_server.dsn("tls_staging", host="db.example", hostaddr="127.0.0.1"))


def _folder_beside(tls_server: TlsServer, name: str) -> Path:
    folder = Path(tls_server.tcp["sslrootcert"]).parent / name
    folder.mkdir(exist_ok=True)
    return folder


def test_every_step_runs_over_verify_full_and_no_secret_is_written(
    tls_server, tls_targets, tmp_path
):
    run, said = make_run(
        tls_targets, tmp_path, "run_tls", folder="artifacts", monitor_period_s=1,
        lock_timeout_ms=200, lock_retries=1, retry_backoff_s=0,
    )  # fmt: skip
    results = {"preflight": steps.preflight(run)}
    results["apply_staging"] = steps.apply_target(run, "staging")
    results["validate_staging"] = steps.validate(run, "staging")  # Great Expectations' URL
    results["db_diff"] = steps.capture_db_diff(run)
    results["assignment"] = steps.run_assignment_tests(run)  # a child process, PGPASSWORD
    results["perf_baseline"] = steps.baseline_production_perf(run)
    results["apply_production"] = steps.apply_target(run, "production")
    try:
        results["perf_monitor"] = steps.monitor_production_perf(run)
    except steps.StepFailed as exc:  # a verdict on one second of samples: not what is tested
        assert "performance regression" in str(exc)
    results["rollback_production"] = steps.rollback_target(run, "production")
    results["rollback_staging"] = steps.rollback_target(run, "staging")
    steps.release_leases(run)

    assert results["validate_staging"]["success"] is True
    assert results["assignment"]["passed"] > 0 and results["assignment"]["failed"] == 0
    assert (
        set(results["perf_baseline"])
        and (tmp_path / "artifacts/production/perf/perf-monitor.json").is_file()
    )
    for target in TARGETS:
        assert outcomes(tls_targets[target]) == ["applied", "rolled_back"]
        assert not migrated(tls_targets[target])

    secrets = [SENTINEL, tls_server.key_path]
    written = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert len(written) > 20
    leaks = [str(p) for p in written for s in secrets if s.encode() in p.read_bytes()]
    assert not leaks, leaks
    assert not [line for line in said for s in secrets if s in line]
    assert not [s for s in secrets if s in json.dumps(results, default=str)]

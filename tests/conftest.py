"""Real PostgreSQL for every SQL test: the embedded PostgreSQL 18 always, and the server at
127.0.0.1:5432 (or ROLLOUT_TEST_DSN) as well when it answers. Each server gets the
baseline once, in a template database; tests get fresh copies and drop them after."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from rollout import db
from rollout.baseline import apply_baseline
from rollout.clusters import start_cluster, stop_cluster
from rollout.dsn import MalformedDsn, check_dsn
from rollout.errors import TargetUnavailable
from tests.pooler import Pgbouncer, pgbouncer_binary, start_pgbouncer

LOCAL_SERVER_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class PgServer:
    label: str
    admin_dsn: str
    major: int


def _probe(dsn: str) -> int | None:
    try:
        with db.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            return db.server_version(conn)
    except TargetUnavailable:
        return None


def _malformed_test_dsn() -> str | None:
    """What is wrong with ROLLOUT_TEST_DSN, if it does not parse: pytest_configure says it in
    one line (raised at import, it would be a traceback)."""
    explicit = os.environ.get("ROLLOUT_TEST_DSN", "").strip()
    if explicit and explicit.lower() != "none":
        try:
            check_dsn(explicit, "ROLLOUT_TEST_DSN")
        except MalformedDsn as exc:
            return str(exc)
    return None


MALFORMED_TEST_DSN = _malformed_test_dsn()


def _discover_external() -> tuple[list[tuple[str, str]], str]:
    """([(label, dsn)], one line saying what was found)."""
    explicit = os.environ.get("ROLLOUT_TEST_DSN", "").strip()
    if explicit.lower() == "none":
        return [], "ROLLOUT_TEST_DSN=none: SQL suites run on the embedded PostgreSQL 18 only"
    dsn = explicit or LOCAL_SERVER_DSN
    if MALFORMED_TEST_DSN:
        return [], MALFORMED_TEST_DSN
    major = _probe(dsn)
    if major is None:
        if explicit:
            raise pytest.UsageError(
                f"ROLLOUT_TEST_DSN names a server that does not answer: {db.redact(dsn)}"
            )
        return (
            [],
            "no PostgreSQL at 127.0.0.1:5432: SQL suites run on the embedded PostgreSQL 18 only",
        )
    return [
        (f"server-pg{major}", dsn)
    ], f"SQL suites also run on PostgreSQL {major} at {db.redact(dsn)}"


EXTERNAL_SERVERS, EXTERNAL_NOTE = _discover_external()


def pytest_configure(config: pytest.Config) -> None:
    if MALFORMED_TEST_DSN:
        raise pytest.UsageError(MALFORMED_TEST_DSN)


SERVER_LABELS = ["embedded-pg18", *(label for label, _ in EXTERNAL_SERVERS)]


def pytest_report_header(config: pytest.Config) -> str:
    return f"rollout: {EXTERNAL_NOTE}"


SERVER_IN_ID = re.compile(r"\[(?:[^\]]*-)?(embedded-pg18|server-pg\d+)(?:-[^\]]*)?\]$")


def fixture_group(nodeid: str) -> str:
    """The work unit a test belongs to under `pytest -n`: tests that share an expensive session
    fixture run on one worker. The end-to-end tests (one Airflow stack), each server's
    benchmark smoke, each server's SQL tests (one seeded template per server and worker);
    every other test is a unit of its own."""
    if nodeid.startswith("tests/e2e/"):
        return "airflow"
    server = SERVER_IN_ID.search(nodeid)
    if server is None:
        return nodeid
    kind = "bench" if nodeid.startswith("tests/benchmarks/") else "pg"
    return f"{kind}-{server.group(1)}"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's load-by-scope scheduling with our groups as the scopes (its own xdist_group
    marks rename node ids, which this pytest no longer lets a plugin do)."""
    from xdist.scheduler import LoadScopeScheduling

    class FixtureGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return fixture_group(nodeid)

    return FixtureGroupScheduling(config, log)


@pytest.fixture(scope="session", params=SERVER_LABELS)
def pg_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgServer]:
    if request.param == "embedded-pg18":
        root = tmp_path_factory.mktemp("pg")
        cluster = start_cluster("test", root)
        try:
            yield PgServer(request.param, cluster.dsn, 18)
        finally:
            stop_cluster("test", root, delete=True)
    else:
        dsn = dict(EXTERNAL_SERVERS)[request.param]
        yield PgServer(request.param, dsn, _probe(dsn) or 0)


def unique_name(prefix: str = "rollout_test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def baseline_template(pg_server: PgServer) -> Iterator[str]:
    """Name of a database holding the baseline schema, to copy from."""
    name = unique_name("rollout_tpl")
    dsn = db.create_database(pg_server.admin_dsn, name)
    try:
        with db.connect(dsn) as conn:
            apply_baseline(conn)
        yield name
    finally:
        db.drop_database(pg_server.admin_dsn, name)


@pytest.fixture(scope="session")
def make_database(pg_server: PgServer, baseline_template: str) -> Iterator[Callable[..., str]]:
    """make_database(baseline=True) -> DSN of a new database, dropped at the end of the session."""
    created: list[str] = []

    def make(*, baseline: bool = True, owner: str | None = None) -> str:
        name = unique_name()
        created.append(name)
        return db.create_database(
            pg_server.admin_dsn, name, owner=owner, template=baseline_template if baseline else None
        )

    yield make
    for name in created:
        db.drop_database(pg_server.admin_dsn, name)


@pytest.fixture(scope="module")
def baseline_db(pg_server: PgServer, baseline_template: str) -> Iterator[str]:
    """A fresh baseline database for one test module."""
    name = unique_name()
    dsn = db.create_database(pg_server.admin_dsn, name, template=baseline_template)
    yield dsn
    db.drop_database(pg_server.admin_dsn, name)


@pytest.fixture
def fresh_db(make_database: Callable[..., str]) -> str:
    """A fresh baseline database for one test."""
    return make_database()


@pytest.fixture(scope="session")
def pgbouncer(pg_server: PgServer) -> Iterator[Pgbouncer]:
    """A real PgBouncer in front of pg_server, in transaction mode (a pool smaller than the
    clients) and in session mode: `pgbouncer.via(dsn, "transaction" | "session")`. Skipped
    where Debian's pgbouncer is not installed (`make test` installs it as root); under CI=true
    its absence fails instead."""
    binary = pgbouncer_binary()
    if binary is None:
        message = "pgbouncer is not installed (apt-get install pgbouncer; `make test` does as root)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}: CI must run the pooler tests")
        pytest.skip(f"{message}: the pooler tests are skipped")
    with start_pgbouncer(binary, pg_server.admin_dsn) as bouncer:
        yield bouncer

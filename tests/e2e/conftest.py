"""One real Airflow (api-server, scheduler, dag-processor; LocalExecutor) for the end-to-end
tests, with an embedded PostgreSQL holding a staging and a production database per scenario.
Each scenario's targets are Airflow connections `s_<scenario>` / `p_<scenario>`, chosen per run
through the DAG's own parameters."""

from __future__ import annotations

import datetime as dt
import email
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout import db
from rollout.airflow_stack import AirflowStack, free_port
from rollout.baseline import apply_baseline
from rollout.clusters import start_cluster, stop_cluster
from rollout.migrations import load_bundle
from rollout.seed import seed_database

VERSION = "20251113203000"
NOTES = "20251120000000"  # a second bundle: bookings.notes, no application tests
REFUSED = "20251121000000"  # its own preflight check refuses it
FIXTURE_BUNDLES = Path(__file__).resolve().parents[1] / "fixtures" / "bundles"
# Bundles only the end-to-end tests see: the real one's scripts with one edit each, and its
# expectations (older versions), and the fixtures' bundles on other tables (newer: runs name
# their version). They sit beside a copy of the real bundle in the folder the stack's
# ROLLOUT_MIGRATIONS_DIR names.
LOSSY = "20251001000001"  # its up deletes an allocation the application marked for maintenance
SLOW = "20251001000002"  # its up holds the allocations lock 10 s before COMMIT
# Its up writes an outbox event no consumer knows, on production only (databases named
# production_*): staging passes, and production's validation finds a violation the migration
# made (a pre-existing one would not fail it: issue 23).
UNKNOWN_EVENT = "20251001000003"
TEST_BUNDLES = {
    f"{LOSSY}_loses_a_maintenance_allocation": (
        "CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;",
        "CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;\n"
        "DELETE FROM public.allocations WHERE id IN "
        "(SELECT id FROM public.allocations WHERE is_maintenance LIMIT 1);",
    ),
    f"{SLOW}_holds_its_lock_a_while": ("\nCOMMIT;", "\nSELECT pg_sleep(10);\nCOMMIT;"),
    f"{UNKNOWN_EVENT}_writes_an_unknown_event_on_production": (
        "CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;",
        "CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;\n"
        "INSERT INTO public.capacity_outbox (event_type) SELECT 'capacity.unknown' "
        "WHERE current_database() LIKE 'production%';",
    ),
}
# What a test bundle's manifest allows beyond the real one's (so its edit reaches validation).
TEST_MANIFESTS = {
    f"{UNKNOWN_EVENT}_writes_an_unknown_event_on_production": (
        "may_insert = []",
        'may_insert = ["public.capacity_outbox"]',
    ),
}


@pytest.fixture(scope="session")
def bundles_dir(tmp_path_factory) -> Path:
    """The bundles the stack's DAGs see: the real one (same checksum) and the test ones."""
    root = tmp_path_factory.mktemp("bundles")
    real = load_bundle(VERSION)
    shutil.copytree(real.path, root / real.path.name)
    for fixture in FIXTURE_BUNDLES.iterdir():  # newer bundles on other tables (issue 19)
        shutil.copytree(fixture, root / fixture.name)
    for name, (old, new) in TEST_BUNDLES.items():
        folder = root / name
        shutil.copytree(real.path, folder)
        up = folder / "up.sql"
        assert old in up.read_text(), name
        up.write_text(up.read_text().replace(old, new, 1))
        manifest = folder / "manifest.toml"
        text = manifest.read_text()
        if name in TEST_MANIFESTS:
            allowed_before, allowed = TEST_MANIFESTS[name]
            assert allowed_before in text, name
            text = text.replace(allowed_before, allowed, 1)
        manifest.write_text(f'expectations = "{VERSION}"\n' + text)
    return root


# scenario -> allocations per target. The regression scenario needs enough rows that a
# sequential scan costs more than the comparison's 0.5 ms noise floor.
SCENARIOS = {
    "happy": 3000,
    "lossy": 3000,
    "lease": 3000,
    "killed": 3000,
    "reject": 3000,
    "bad_staging": 3000,
    "regression": 20000,
    "contention": 3000,
    "params": 3000,
    "timeout": 3000,
    "window": 3000,
    "blocked": 3000,
    "browser": 3000,
    "bad_tests": 3000,
    "online": 3000,
    "bad_production": 3000,
    "restart": 3000,
    "preexisting": 3000,
    # The review page's browser test makes its own runs here only when run without the
    # scenarios whose runs it reads (finished_runs).
    "review_ok": 3000,
    "review_reject": 3000,
    "review_rollback": 3000,
    # What exactly is approved: a bundle edited after the approval; a second trigger.
    "edited": 3000,
    "twice": 3000,
}
# Every connection the stack gets carries this password (the servers trust local connections
# and ignore it): test_secrets_sweep.py then looks for it in every artifact, log and XCom.
SENTINEL_PASSWORD = f"s3ntinel-{uuid.uuid4().hex[:12]}"


def with_sentinel(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    return make_conninfo(**{**conninfo_to_dict(dsn), "password": SENTINEL_PASSWORD})


# Fleet scenario -> how many production targets. The targets alternate between the embedded
# PostgreSQL 18 and the local server at 127.0.0.1:5432 when it answers: one fleet, two servers.
FLEET_SCENARIOS = {
    "fleet_canary": 3, "fleet_all": 5, "fleet_healthy": 5, "fleet_celery": 3, "fleet_review": 3,
}  # fmt: skip
FLEET_SIZE = 3000
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def _local_server() -> str | None:
    try:
        with db.connect(LOCAL_SERVER, connect_timeout=2):
            return LOCAL_SERVER
    except Exception:
        return None


@pytest.fixture(scope="session")
def fleet_targets(e2e_admin) -> Iterator[dict[str, dict[str, str]]]:
    """{scenario: {"staging": dsn, "f_<scenario>_<i>": dsn, …}} on one or two servers."""
    servers = [e2e_admin, *filter(None, [_local_server()])]
    templates, created = {}, []
    suffix = uuid.uuid4().hex[:6]
    try:
        for admin in servers:
            name = f"fleet_template_{suffix}"
            dsn = db.create_database(admin, name)
            created.append((admin, name))
            with db.connect(dsn) as conn:
                apply_baseline(conn)
                seed_database(conn, FLEET_SIZE, seed=7, anchor=dt.date(2026, 12, 1))
            templates[admin] = name
        fleets: dict[str, dict[str, str]] = {}
        for scenario, count in FLEET_SCENARIOS.items():
            dbs = {"staging": (e2e_admin, f"s_{scenario}_{suffix}")}
            for i in range(count):
                dbs[f"f_{scenario}_{i}"] = (servers[i % len(servers)], f"f_{scenario}_{i}_{suffix}")
            fleets[scenario] = {}
            for key, (admin, name) in dbs.items():
                fleets[scenario][key] = db.create_database(admin, name, template=templates[admin])
                created.append((admin, name))
        yield fleets
    finally:
        for admin, name in reversed(created):
            db.drop_database(admin, name)


@pytest.fixture(scope="session")
def e2e_admin(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("e2e-pg")
    try:
        yield start_cluster("e2e", root).dsn
    finally:
        stop_cluster("e2e", root, delete=True)


@pytest.fixture(scope="session")
def e2e_targets(e2e_admin) -> dict[str, dict[str, str]]:
    """{scenario: {"staging": dsn, "production": dsn}} in the e2e cluster (dropped with it)."""
    for size in sorted(set(SCENARIOS.values())):
        dsn = db.create_database(e2e_admin, f"e2e_template_{size}")
        with db.connect(dsn) as conn:
            apply_baseline(conn)
            seed_database(conn, size, seed=7, anchor=dt.date(2026, 12, 1))
    return {
        scenario: {
            kind: db.create_database(
                e2e_admin, f"{kind}_{scenario}", template=f"e2e_template_{size}"
            )
            for kind in ("staging", "production")
        }
        for scenario, size in SCENARIOS.items()
    }


@pytest.fixture(scope="session")
def finished_runs() -> dict[str, str]:
    """Runs the scenarios made that the review page's browser test (test_rollout_review.py,
    after them in name order) reads again instead of making its own: kind -> run id, the kinds
    "succeeded", "rejected", "rolled back" (a migration_rollout run each) and "fleet"."""
    return {}


@pytest.fixture
def browser_page():
    """Headless Chromium (tests/e2e/browser.py); skips without Chromium or Playwright."""
    from tests.e2e.browser import open_browser

    with open_browser() as (page, _watch):
        yield page


class MailBox:
    """A local SMTP server (aiosmtpd) that keeps what it receives: the email notifier's
    receiver, so the test sees real mail arrive."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def for_run(self, run_id: str) -> list[email.message.Message]:
        return [m for m in self.messages if run_id in _text(m)]


def _text(message: email.message.Message) -> str:
    parts = message.walk() if message.is_multipart() else [message]
    return "".join(
        (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
        for part in parts
        if part.get_content_maintype() == "text"
    ) + str(message["Subject"])


@pytest.fixture(scope="session")
def mailbox() -> Iterator[MailBox]:
    from aiosmtpd.controller import Controller

    box = MailBox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def airflow(
    e2e_targets, fleet_targets, mailbox, bundles_dir, tmp_path_factory
) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("airflow")
    connections = {}
    for scenario, dsns in e2e_targets.items():
        connections[f"s_{scenario}"] = with_sentinel(dsns["staging"])
        connections[f"p_{scenario}"] = with_sentinel(dsns["production"])
    for scenario, dsns in fleet_targets.items():
        for key, dsn in dsns.items():
            connections[f"s_{scenario}" if key == "staging" else key] = with_sentinel(dsn)
    smtp = {"conn_type": "smtp", "host": "127.0.0.1", "port": mailbox.port,
            "extra": {"disable_tls": True, "disable_ssl": True}}  # fmt: skip
    # The email notifier, plugged in by configuration only, as README.md says.
    notifiers = [{
        "class": "airflow.providers.smtp.notifications.smtp.SmtpNotifier",
        "kwargs": {"to": "dba@example.com", "from_email": "rollout@example.com",
                   "subject": "{subject}", "html_content": "<pre>{message}</pre><p>{link}</p>",
                   "smtp_conn_id": "rollout_smtp"},
    }]  # fmt: skip
    stack = AirflowStack(
        home=home,
        port=free_port(),
        connections=connections,
        extra_env={
            "ROLLOUT_ARTIFACTS_URL": f"file://{home / 'artifacts'}",
            "AIRFLOW_CONN_ROLLOUT_SMTP": json.dumps(smtp),
            "ROLLOUT_NOTIFIERS": json.dumps(notifiers),
            "ROLLOUT_MIGRATIONS_DIR": str(bundles_dir),
        },
    )
    try:
        stack.start(say=lambda _m: None)
        yield stack
    finally:
        stack.stop()

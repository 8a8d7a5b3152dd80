"""One real Airflow (api-server, scheduler, dag-processor; LocalExecutor) for the end-to-end
tests, with an embedded PostgreSQL holding a staging and a production database per scenario.
Each scenario's targets are Airflow connections `s_<scenario>` / `p_<scenario>`, chosen per run
through the DAG's own parameters."""

from __future__ import annotations

import datetime as dt
import email
import json
import socket
from collections.abc import Iterator

import pytest

from rollout import db
from rollout.airflow_stack import AirflowStack
from rollout.baseline import apply_baseline
from rollout.clusters import start_cluster, stop_cluster
from rollout.seed import seed_database

# scenario -> allocations per target. The regression scenario needs enough rows that a
# sequential scan costs more than the comparison's 0.5 ms noise floor.
SCENARIOS = {
    "happy": 3000,
    "reject": 3000,
    "bad_staging": 3000,
    "regression": 20000,
    "contention": 3000,
    "params": 3000,
    "timeout": 3000,
    "window": 3000,
    "blocked": 3000,
    "browser": 3000,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def e2e_targets(tmp_path_factory) -> Iterator[dict[str, dict[str, str]]]:
    root = tmp_path_factory.mktemp("e2e-pg")
    admin = start_cluster("e2e", root).dsn
    targets: dict[str, dict[str, str]] = {}
    try:
        for size in sorted(set(SCENARIOS.values())):
            template = f"e2e_template_{size}"
            dsn = db.create_database(admin, template)
            with db.connect(dsn) as conn:
                apply_baseline(conn)
                seed_database(conn, size, seed=7, anchor=dt.date(2026, 12, 1))
        for scenario, size in SCENARIOS.items():
            targets[scenario] = {
                kind: db.create_database(
                    admin, f"{kind}_{scenario}", template=f"e2e_template_{size}"
                )
                for kind in ("staging", "production")
            }
        yield targets
    finally:
        stop_cluster("e2e", root, delete=True)


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
    controller = Controller(box, hostname="127.0.0.1", port=_free_port())
    controller.start()
    box.port = controller.port
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def airflow(e2e_targets, mailbox, tmp_path_factory) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("airflow")
    connections = {}
    for scenario, dsns in e2e_targets.items():
        connections[f"s_{scenario}"] = dsns["staging"]
        connections[f"p_{scenario}"] = dsns["production"]
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
        port=_free_port(),
        connections=connections,
        extra_env={
            "ROLLOUT_ARTIFACTS_URL": f"file://{home / 'artifacts'}",
            "AIRFLOW_CONN_ROLLOUT_SMTP": json.dumps(smtp),
            "ROLLOUT_NOTIFIERS": json.dumps(notifiers),
        },
    )
    try:
        stack.start(say=lambda _m: None)
        yield stack
    finally:
        stack.stop()

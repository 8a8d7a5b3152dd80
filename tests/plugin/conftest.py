"""One Airflow API app with the rollout plugin loaded (Airflow's own app factory, the
SimpleAuthManager with one DAG hidden from one user, real tokens from /auth/token), served by
uvicorn on 127.0.0.1 from a subprocess; its metadata database holds the DAG runs below, its
artifacts folder their files, and secrets sit where the compose stack keeps its own: the
passwords file two levels above the artifacts root."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from rollout import db, ledger
from rollout.airflow_stack import connection_json, free_port
from rollout.clusters import start_cluster, stop_cluster
from rollout.migrations import load_bundle
from rollout.paths import PROJECT_ROOT
from tests.plugin.auth_manager import HIDDEN_DAG, OUTSIDER

DAG = "migration_rollout"
FLEET_DAG = "fleet_rollout"
RUN = "manual__2026-11-29T10:00:00+00:00"
RUN_FOLDER = "manual__2026-11-29T10_00_00_00_00"  # safe_run_id(RUN)
FLEET_RUN = "manual__2026-11-29T11:00:00+00:00"
FLEET_FOLDER = "manual__2026-11-29T11_00_00_00_00"
HIDDEN_RUN = "manual__payroll"
LINKED_RUN = "linked_run"  # its folder is a symlink to Airflow's auth folder
ORPHAN_FOLDER = "manual__orphan"  # a folder of artifacts with no run in Airflow
# A stored script, as GX Data Docs would carry a database value a tenant wrote.
STORED_SCRIPT = "<script>fetch('/api/v2/dags')</script>"
TARGETS = {"staging": "s_plugin", "production": "p_plugin"}
FLEET_TARGETS = ["p_plugin", "f_plugin_1"]
NOT_A_TARGET = "secret_db"  # a connection defined in Airflow that no run names


@dataclass
class PluginServer:
    url: str
    port: int
    root: Path
    artifacts: Path
    passwords: dict[str, str]
    secrets: list[str]  # text that must never appear in any answer
    target_dsn: str
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user: str = "admin") -> str:
        if user not in self.tokens:
            response = httpx.post(
                f"{self.url}/auth/token",
                json={"username": user, "password": self.passwords[user]}, timeout=30,
            )  # fmt: skip
            response.raise_for_status()
            self.tokens[user] = response.json()["access_token"]
        return self.tokens[user]

    def get(self, path: str, user: str | None = "admin") -> httpx.Response:
        """GET through httpx (which normalises the path, as a browser does)."""
        headers = {"Authorization": f"Bearer {self.token(user)}"} if user else {}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=30)

    def raw_get(self, path: str, user: str | None = "admin") -> tuple[int, dict[str, str], bytes]:
        """GET with the path sent exactly as given, dot segments and escapes untouched (as
        `curl --path-as-is` sends it): (status, headers with lower-case names, body)."""
        auth = f"Authorization: Bearer {self.token(user)}\r\n" if user else ""
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{auth}Connection: close\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(request.encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = _unchunk(body)
        return int(status_line.split()[1]), headers, body


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def lay_out_artifacts(root: Path, artifacts: Path) -> None:
    """The runs' folders, as the DAGs write them, and what an attacker could plant."""
    run = artifacts / DAG / RUN_FOLDER
    _write(run / "summary.md", "# Rollout 20251113203000: succeeded\n")
    _write(run / "summary.html", f"<!doctype html><h1>succeeded</h1>{STORED_SCRIPT}\n")
    _write(run / "run.json", json.dumps({"run_id": RUN, "targets": TARGETS}))
    _write(run / "db-diff.txt", "db-diff: staging before and after\n")
    # What a step records of a database value, as the review page reads it.
    _write(run / "staging" / "validation" / "validation-report.json", json.dumps({
        "success": False, "failures": [f"catalog: stored ({STORED_SCRIPT})"],
        "gx": {"suite": "post_migration", "evaluated": 0, "successful": 0},
        "catalog": [{"name": "a stored value", "passed": False, "detail": STORED_SCRIPT}]}))  # fmt: skip
    _write(
        run / "staging" / "validation" / "validation-report.md",
        f"# Validation\n\n{STORED_SCRIPT}\n",
    )
    (run / "leak.md").symlink_to(root / "opt" / "airflow" / "auth" / "passwords.json")
    docs = run / "staging" / "validation" / "data-docs"
    _write(docs / "index.html", f"<html><body><table><td>{STORED_SCRIPT}</td></table></body>")
    _write(docs / "static" / "fonts" / "font.woff", "font")
    # Symlinks: one to a file of the run (served), two pointing outside it (never served).
    (run / "same-diff.txt").symlink_to(run / "db-diff.txt")
    (run / "leak.txt").symlink_to(root / "opt" / "airflow" / "auth" / "passwords.json")
    (run / "outside").symlink_to(root / "opt" / "airflow" / "auth", target_is_directory=True)
    os.mkfifo(run / "pipe.txt")  # opening a FIFO blocks: it must be refused, not opened

    fleet = artifacts / FLEET_DAG / FLEET_FOLDER
    _write(fleet / "summary.md", "# Fleet rollout 20251113203000: succeeded\n")
    _write(fleet / "run.json", json.dumps({"run_id": FLEET_RUN, "targets": {
        "staging": TARGETS["staging"], "production": FLEET_TARGETS},
        "waves": [FLEET_TARGETS[:1], FLEET_TARGETS[1:]]}))  # fmt: skip
    _write(fleet / "targets" / "p_plugin" / "production" / "perf" / "perf-monitor.md", "ok\n")

    _write(artifacts / HIDDEN_DAG / HIDDEN_RUN / "payroll.txt", "PAYROLL-ARTIFACT\n")
    _write(artifacts / DAG / ORPHAN_FOLDER / "orphan.txt", "ORPHAN-ARTIFACT\n")
    (artifacts / DAG / LINKED_RUN).symlink_to(root / "opt" / "airflow" / "auth")


@pytest.fixture(scope="session")
def plugin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginServer]:
    root = tmp_path_factory.mktemp("plugin")
    home = root / "opt" / "airflow" / "home"
    auth = root / "opt" / "airflow" / "auth"
    artifacts = root / "opt" / "rollout" / "artifacts"
    for folder in (home, auth, artifacts):
        folder.mkdir(parents=True)
    passwords = {"admin": secrets.token_hex(12), OUTSIDER: secrets.token_hex(12)}
    (auth / "passwords.json").write_text(json.dumps(passwords))
    jwt_secret = secrets.token_hex(32)
    (root / "opt" / "rollout" / "jwt_secret").write_text(jwt_secret)
    lay_out_artifacts(root, artifacts)

    cluster_root = root / "pg"
    admin = start_cluster("plugin", cluster_root).dsn
    try:
        dsns = {
            name: db.create_database(admin, name) for name in ("p_plugin", "secret_db")
        }  # fmt: skip
        for dsn in dsns.values():
            with db.connect(dsn) as conn:
                ledger.ensure_ledger(conn)
                with conn.transaction():
                    ledger.record(
                        conn, load_bundle(None), direction="up", outcome="applied", run_id=RUN,
                        actor="admin", started_at=dt.datetime.now(dt.UTC), lock_s=0.25,
                    )  # fmt: skip
        runs = [
            [DAG, RUN], [FLEET_DAG, FLEET_RUN], [HIDDEN_DAG, HIDDEN_RUN], [DAG, LINKED_RUN],
            # Runs whose ids Airflow accepts and that must still not leave their folder.
            [DAG, ".."], [DAG, "."], ["..", ".."],
        ]  # fmt: skip
        (root / "runs.json").write_text(json.dumps(runs))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update({
            "PYTHONPATH": str(PROJECT_ROOT),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Airflow 3.3 refuses '..' in ids unless this is on; a deployment may turn it on,
            # and the plugin must hold either way: the runs '..' above exist with it.
            "AIRFLOW__CORE__ALLOW_DOUBLE_DOT_IN_IDS": "True",
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "no-dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__AUTH_MANAGER": "tests.plugin.auth_manager.OneDagHiddenAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"admin:admin,{OUTSIDER}:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(auth / "passwords.json"),
            "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "ROLLOUT_ARTIFACTS_URL": f"file://{artifacts}",
            "ROLLOUT_STATE_DIR": str(root / "state"),
            "GX_ANALYTICS_ENABLED": "false",
            "AIRFLOW_CONN_P_PLUGIN": connection_json(dsns["p_plugin"]),
            "AIRFLOW_CONN_SECRET_DB": connection_json(dsns["secret_db"]),
        })  # fmt: skip
        log = (root / "server.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.plugin.airflow_app", str(port), str(root / "runs.json")],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_for(server, url, root / "server.log")
            yield PluginServer(
                url=url, port=port, root=root, artifacts=artifacts, passwords=passwords,
                secrets=[*passwords.values(), jwt_secret, "PAYROLL-ARTIFACT", "ORPHAN-ARTIFACT"],
                target_dsn=dsns["p_plugin"],
            )  # fmt: skip
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    finally:
        stop_cluster("plugin", cluster_root, delete=True)


def _wait_for(server: subprocess.Popen, url: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the plugin's Airflow app exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the plugin's Airflow app did not answer in {timeout:.0f} s: {log}")

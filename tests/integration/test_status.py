"""`rollout status` as an application's start-up or a pipeline calls it: the real command,
against a database without a ledger, before and after the migration, and with a bundle on
disk that no longer matches what was applied."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys

import pytest

from rollout import db, ledger, steps
from rollout.artifacts import ArtifactDir
from rollout.paths import PROJECT_ROOT
from rollout.run import Run
from rollout.seed import seed_database
from rollout.settings import RolloutSettings

VERSION = "20251113203000"


def status(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rollout", "status", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120,
    )  # fmt: skip


@pytest.fixture
def target(make_database) -> str:
    dsn = make_database()
    with db.connect(dsn) as conn:
        seed_database(conn, 1000, seed=3, anchor=dt.date(2026, 12, 1))
    return dsn


def apply(dsn: str, tmp_path) -> None:
    run = Run(
        settings=RolloutSettings.from_params({}),
        dsns={"staging": dsn, "production": dsn},
        artifacts=ArtifactDir(tmp_path / "artifacts"),
        run_id="status_test_run",
        progress=lambda _m: None,
    )
    steps.apply_target(run, "staging")


def test_a_database_without_a_ledger_says_so_and_stays_untouched(target):
    shown = status("--target", target)
    assert shown.returncode == 1 and "no rollout ledger" in shown.stdout
    required = status("--target", target, "--require", VERSION)
    assert required.returncode == 1
    assert required.stderr.strip().endswith(
        "no rollout ledger (nothing was ever applied by this tool)"
    )
    assert len(required.stderr.strip().splitlines()) == 1
    with db.connect(target) as conn:
        assert not ledger.has_ledger(conn)
        assert conn.execute("SELECT to_regnamespace('rollout')").fetchone()[0] is None


def test_before_and_after_the_migration(target, tmp_path):
    with db.connect(target) as conn:
        ledger.ensure_ledger(conn)  # a ledger with nothing applied yet
    before = status("--target", target, "--require", VERSION)
    assert before.returncode == 1 and "has never been applied" in before.stderr

    apply(target, tmp_path)
    after = status("--target", target, "--require", VERSION)
    assert after.returncode == 0, after.stderr
    table = status("--target", target)
    assert table.returncode == 0
    assert VERSION in table.stdout and "applied" in table.stdout and "matches" in table.stdout
    [entry] = json.loads(status("--target", target, "--json").stdout)[0]["versions"]
    assert entry["state"] == "applied" and entry["run_id"] == "status_test_run"
    assert entry["bundle_on_disk"] == "matches" and entry["lock_s"] > 0


def test_a_tampered_bundle_fails_the_requirement(target, tmp_path):
    apply(target, tmp_path)
    project = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "sql", project / "sql")
    [bundle] = (project / "sql" / "migrations").iterdir()
    with (bundle / "up.sql").open("a") as up:
        up.write("-- edited after it was applied\n")
    env = {"ROLLOUT_PROJECT_ROOT": str(project)}
    required = status("--target", target, "--require", VERSION, env=env)
    assert required.returncode == 1
    assert "but the bundle on disk has" in required.stderr
    assert "DIFFERS" in status("--target", target, env=env).stdout


def test_a_connection_id_is_read_from_the_environment(target, tmp_path):
    from psycopg.conninfo import conninfo_to_dict

    apply(target, tmp_path)
    params = conninfo_to_dict(target)
    conn = {"conn_type": "postgres", "host": params.get("host"), "login": params.get("user"),
            "schema": params["dbname"], "port": int(params.get("port") or 5432)}  # fmt: skip
    env = {"AIRFLOW_CONN_APP_DB": json.dumps(conn)}
    assert status("--target", "app_db", "--require", VERSION, env=env).returncode == 0
    missing = status("--target", "nowhere", "--require", VERSION)
    assert missing.returncode == 2 and "AIRFLOW_CONN_NOWHERE" in missing.stderr

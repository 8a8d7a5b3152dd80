"""The fleet DAG on Airflow's CeleryExecutor, for real: the machine's Redis as the broker, two
`airflow celery worker` processes started here, the same DAG file, nothing else changed."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout.airflow_paths import safe_run_id
from rollout.airflow_stack import APPROVER, REDIS_BROKER, AirflowStack, free_port
from rollout.demo_rollout import follow_run
from tests.e2e.conftest import VERSION
from tests.target_state import migrated

pytestmark = pytest.mark.slow


def _redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def celery_airflow(fleet_targets, tmp_path_factory) -> Iterator[AirflowStack]:
    if not _redis_answers():
        message = f"no Redis at {REDIS_BROKER}: the CeleryExecutor test needs one as its broker"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI's machine runs Redis: its absence is a failure there
        pytest.skip(message)
    home = tmp_path_factory.mktemp("airflow-celery")
    dsns = fleet_targets["fleet_celery"]
    connections = {("s_fleet_celery" if k == "staging" else k): v for k, v in dsns.items()}
    stack = AirflowStack(
        home=home,
        port=free_port(),
        connections=connections,
        executor="CeleryExecutor",
        celery_workers=2,
        extra_env={"ROLLOUT_ARTIFACTS_URL": f"file://{home / 'artifacts'}"},
    )
    try:
        stack.start(say=lambda _m: None)
        yield stack
    finally:
        stack.stop()


def test_the_fleet_rolls_out_on_two_celery_workers(celery_airflow, fleet_targets):
    stack = celery_airflow
    params = {"staging_conn_id": "s_fleet_celery", "production_targets": ["f_fleet_celery_*"],
              "canary_size": 1, "wave_size": 2, "monitor_period_s": 0,
              "approvers": [APPROVER], "version": VERSION}  # fmt: skip
    run_id = stack.trigger(params, "fleet_rollout")
    state, _ = follow_run(
        stack, run_id, lambda _m: None, dag_id="fleet_rollout", timeout_s=900, quiet_tasks=True
    )
    folder = Path(stack.extra_env["ROLLOUT_ARTIFACTS_URL"].removeprefix("file://"))
    report = json.loads(
        (folder / "fleet_rollout" / safe_run_id(run_id) / "fleet-report.json").read_text()
    )
    assert state == "success", report
    assert [row["state"] for row in report["targets"]] == ["applied"] * 3
    for key, dsn in fleet_targets["fleet_celery"].items():
        assert migrated(dsn), key
    # The tasks ran on the Celery workers, both of them, not in the scheduler.
    logs = stack.home / "component-logs"
    executed = {
        name: len(re.findall(r"Executing workload", (logs / f"{name}.log").read_text()))
        for name in ("celery-worker-1", "celery-worker-2")
    }
    assert all(count > 0 for count in executed.values()), executed
    assert "CeleryExecutor" in (logs / "scheduler.log").read_text()

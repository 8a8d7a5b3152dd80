"""Airflow's own API app with the rollout plugin loaded, as `airflow api-server` mounts it,
served by uvicorn on 127.0.0.1: the plugin tests' server (run as a subprocess, so its Airflow
configuration, metadata database and auth manager are its own and not the test process's).

    python -m tests.plugin.airflow_app <port> <runs.json>

runs.json lists the DAG runs to create first: [[dag_id, run_id], ...]. Everything else comes
from the environment (AIRFLOW_HOME, the SQLite database, the plugins folder, the users)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def seed_runs(runs: list[list[str]]) -> None:
    """An empty metadata database (the ORM's tables, stamped as migrated) and the DAG runs."""
    from airflow.models.dagrun import DagRun
    from airflow.sdk import timezone
    from airflow.utils import db
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunType

    db.initdb()
    with create_session() as session:
        for dag_id, run_id in runs:
            session.add(
                DagRun(dag_id=dag_id, run_id=run_id, run_type=DagRunType.MANUAL,
                       run_after=timezone.utcnow())
            )  # fmt: skip


def main(port: int, runs_file: Path) -> None:
    import uvicorn
    from airflow.api_fastapi.app import create_app

    seed_runs(json.loads(runs_file.read_text()))
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))

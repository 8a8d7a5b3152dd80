"""Where a run's artifacts live (one folder per run, through Airflow's object storage) and where
its pages are: the one place both the tasks and the plugin ask."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from airflow.sdk import ObjectStoragePath

from rollout.artifacts import ArtifactDir
from rollout.paths import STATE_DIR

log = logging.getLogger("rollout")


URL_PREFIX = "/rollout"  # where the plugin serves the artifact pages (rollout_plugin.py)


ARTIFACTS_URL_ENV = "ROLLOUT_ARTIFACTS_URL"  # e.g. s3://bucket/rollouts (needs its provider)


def artifacts_base() -> ObjectStoragePath:
    url = os.environ.get(ARTIFACTS_URL_ENV) or f"file://{STATE_DIR / 'artifacts'}"
    return ObjectStoragePath(url)


def safe_run_id(run_id: str) -> str:
    """The run id as one path segment (run ids hold ':' and '+'). Never '.', '..' or hidden:
    Airflow accepts a run id such as '..', and its folder must still be the run's own."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
    return "_" + name[1:] if name.startswith(".") else name or "_"


# A DAG id as a folder name. Airflow accepts dag ids such as '..' (letters, digits, '_', '.',
# '-'); ours are plain words, so anything that could name another folder is refused.
DAG_FOLDER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def safe_dag_id(dag_id: str) -> str:
    """The DAG id as one path segment, or ValueError when it could leave the artifacts root."""
    if not DAG_FOLDER.fullmatch(dag_id) or ".." in dag_id:
        raise ValueError(f"the DAG id {dag_id!r} cannot name a folder of artifacts")
    return dag_id


def run_artifacts(dag_id: str, run_id: str) -> Any:
    """The run's folder of artifacts: always one level under the DAG's, two under the root."""
    return artifacts_base() / safe_dag_id(dag_id) / safe_run_id(run_id)


def run_page_path(dag_id: str, run_id: str) -> str:
    """The run's artifact page under Airflow's address (ids percent-encoded, ':' and '+' kept
    as Airflow's own run ids use them)."""
    from urllib.parse import quote

    return f"{URL_PREFIX}/runs/{quote(dag_id, safe='')}/{quote(run_id, safe=':+~')}/"


def run_page_url(dag_id: str, run_id: str) -> str:
    """The run's artifact page as a person opens it ([api] base_url in front)."""
    from airflow.sdk.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}{run_page_path(dag_id, run_id)}"


def fail_safe_artifacts(context: Any) -> ArtifactDir | None:
    """The run's artifact folder, or None when it cannot be opened (for best-effort records)."""
    dag_run = context["dag_run"]
    try:
        return ArtifactDir(run_artifacts(dag_run.dag_id, dag_run.run_id))
    except OSError as exc:
        log.warning("the run's artifact folder cannot be opened: %s", exc)
        return None

"""The artifacts of a rollout run in Airflow's UI: a page per run listing its files (the
summary first) and the files themselves, behind Airflow's own auth — the caller must be allowed
to read that DAG's runs, by the UI's session cookie or a bearer token."""

from __future__ import annotations

import html
import json
import mimetypes
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.sdk import BaseOperatorLink
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response

from rollout.airflow_support import URL_PREFIX, run_artifacts, run_page_path
from rollout.artifacts import list_tree
from rollout.steps import headline_artifacts

DAG_ID = "migration_rollout"

app = FastAPI(title="Rollout artifacts")
read_runs = Depends(requires_access_dag("GET", DagAccessEntity.RUN))


@app.get("/runs/{dag_id}/{run_id}/", response_class=HTMLResponse, dependencies=[read_runs])
def run_page(dag_id: str, run_id: str) -> HTMLResponse:
    root = run_artifacts(dag_id, run_id)
    files = list_tree(root)
    if not files:
        raise HTTPException(404, f"no artifacts for run {run_id} of {dag_id} (yet)")
    summary = root / "summary.md"
    head = html.escape(summary.read_text()) if summary.exists() else "No summary yet: the run is "
    head += "" if summary.exists() else "still going, or its report did not run."
    ledgers = ""
    run_json = root / "run.json"
    if run_json.exists():
        targets = json.loads(run_json.read_text()).get("targets", {})
        ledgers = "".join(
            f"<h2>Ledger of {html.escape(name)} ({html.escape(conn_id)})</h2>"
            f"<pre>{html.escape(ledger_text(conn_id))}</pre>"
            for name, conn_id in sorted(targets.items(), key=lambda t: t[0] != "staging")
        )
    items = "\n".join(
        f'<li><a href="files/{html.escape(name)}">{html.escape(name)}</a></li>'
        for name in headline_artifacts(files)
    )
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Artifacts of {html.escape(run_id)}"
        f"</title></head><body><h1>{html.escape(dag_id)} / {html.escape(run_id)}</h1>"
        f"<pre>{head}</pre>{ledgers}<h2>Artifacts</h2><ul>{items}</ul></body></html>"
    )


@app.get("/runs/{dag_id}/{run_id}/files/{name:path}", dependencies=[read_runs])
def run_file(dag_id: str, run_id: str, name: str) -> Response:
    if not name or any(part in ("", ".", "..") for part in name.split("/")):
        raise HTTPException(400, "not a file of this run")
    path = run_artifacts(dag_id, run_id) / name
    if not path.is_file():
        raise HTTPException(404, f"{name} is not among the artifacts of {run_id}")
    media_type = mimetypes.guess_type(name)[0] or "text/plain"
    if name.endswith((".md", ".txt", ".json", ".xml")):
        media_type = "text/plain; charset=utf-8"  # shown, not downloaded
    return Response(path.read_bytes(), media_type=media_type)


def ledger_text(conn_id: str) -> str:
    """A target's ledger as `rollout status` shows it (read-only), or why it cannot be read."""
    from airflow.models.connection import Connection

    from rollout.status import read_status, render_table
    from rollout.targets import dsn_from_connection

    try:
        dsn = dsn_from_connection(Connection.get_connection_from_secrets(conn_id))
        return render_table([read_status(conn_id, dsn)])
    except Exception as exc:  # a page: show why, never fail it
        return f"cannot read the ledger of {conn_id}: {str(exc).splitlines()[0]}"


@app.get("/ledger/{conn_id}", response_class=HTMLResponse,
         dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN, DAG_ID))])  # fmt: skip
def ledger_page(conn_id: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Ledger of "
        f"{html.escape(conn_id)}</title></head><body><h1>Ledger of {html.escape(conn_id)}</h1>"
        f"<pre>{html.escape(ledger_text(conn_id))}</pre></body></html>"
    )


class RunArtifactsLink(BaseOperatorLink):
    """'Rollout artifacts' on every task of the rollout DAG: its run's artifact page."""

    name = "Rollout artifacts"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if ti_key.dag_id != DAG_ID:
            return ""
        return run_page_path(ti_key.dag_id, ti_key.run_id)


EXTERNAL_VIEW = {
    "name": "Rollout artifacts",
    "href": f"{URL_PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}/",
    "destination": "dag_run",
    "url_route": "rollout_artifacts",
}

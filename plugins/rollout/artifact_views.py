"""The artifacts of a rollout run in Airflow's UI: a page per run listing its files (the
summary first) and its targets' ledgers, the files themselves, and each target's ledger on its
own. Every route reaches a run only through `readable_run` (artifact_access.py): the run
exists and the caller, by the UI's session cookie or a bearer token, may read that DAG's runs."""

from __future__ import annotations

import html
import json
import logging
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from rollout.airflow_paths import URL_PREFIX, run_page_path
from rollout.artifact_access import (
    ReadableRun,
    RunArtifacts,
    SecurityHeaders,
    artifact_response,
    file_url,
    not_found,
    read_text,
    run_files,
    security_headers,
)
from rollout.report import headline_artifacts

log = logging.getLogger("rollout")

DAG_ID = "migration_rollout"
FLEET_DAG_ID = "fleet_rollout"
ROLLOUT_DAG_IDS = (DAG_ID, FLEET_DAG_ID)  # the DAGs that write artifacts (dags/)
# A fleet run may have a hundred targets: past this many, the run's page links each target's
# ledger instead of opening a connection to every one of them for one page view.
INLINE_LEDGERS = 6

# No /docs, /redoc or /openapi.json: they would answer without a login and describe the routes.
app = FastAPI(title="Rollout artifacts", docs_url=None, redoc_url=None, openapi_url=None)
app.add_middleware(SecurityHeaders)


@app.exception_handler(Exception)
def server_error(request: Request, exc: Exception) -> Response:
    """A failure still answers with the plugin's headers (Starlette answers a 500 outside the
    app's middleware) and says no more than that it failed."""
    log.exception("rollout artifacts: %s %s failed", request.method, request.url.path)
    return PlainTextResponse(
        "The rollout plugin failed on this request; the api-server's log says why.",
        status_code=500,
        headers=security_headers(),
    )


def run_targets(run: RunArtifacts) -> list[tuple[str, str]]:
    """(role, connection id) of each target the run names in its run.json, staging first. A
    fleet run's production is a list."""
    try:
        named = json.loads(read_text(run, "run.json") or "{}").get("targets", {})
    except (ValueError, AttributeError):
        return []
    if not isinstance(named, dict):
        return []
    found = []
    for role, value in sorted(named.items(), key=lambda t: t[0] != "staging"):
        for conn_id in value if isinstance(value, list) else [value]:
            if isinstance(role, str) and isinstance(conn_id, str) and (role, conn_id) not in found:
                found.append((role, conn_id))
    return found


def ledger_text(conn_id: str) -> str:
    """A target's ledger as `rollout status` shows it (read-only), without the connection's
    host, port, user or database: the page shows the id, the api-server's log any error."""
    from airflow.models.connection import Connection

    from rollout.status import read_status, render_table
    from rollout.targets import dsn_from_connection

    try:
        dsn = dsn_from_connection(Connection.get_connection_from_secrets(conn_id))
        status = read_status(conn_id, dsn)
    except Exception:  # a page: say it failed, never fail it, never show the DSN
        log.warning("rollout artifacts: cannot read the ledger of %s", conn_id, exc_info=True)
        return (
            f"cannot read the ledger of {conn_id}: the connection is not defined here or its "
            "database did not answer (the api-server's log says which)"
        )
    status.database = status.target  # render_table prints the DSN beside the id otherwise
    return render_table([status])


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body>{body}</body></html>"
    )


@app.get("/runs/{dag_id}/{run_id}/", response_class=HTMLResponse)
def run_page(run: ReadableRun) -> HTMLResponse:
    files = run_files(run)
    if not files:  # the caller may read the run: saying it has no files yet tells nothing new
        raise HTTPException(404, "This run has no artifacts (yet).")
    summary = read_text(run, "summary.md")
    head = html.escape(summary) if summary is not None else (
        "No summary yet: the run is still going, or its report did not run."
    )  # fmt: skip
    targets = run_targets(run)
    if len(targets) <= INLINE_LEDGERS:
        ledgers = "".join(
            f"<h2>Ledger of {html.escape(role)} ({html.escape(conn_id)})</h2>"
            f"<pre>{html.escape(ledger_text(conn_id))}</pre>"
            for role, conn_id in targets
        )
    else:
        ledgers = "<h2>Ledgers</h2><ul>" + "".join(
            f'<li><a href="ledgers/{html.escape(quote(conn_id, safe=""))}">{html.escape(role)}: '
            f"{html.escape(conn_id)}</a></li>"
            for role, conn_id in targets
        ) + "</ul>"  # fmt: skip
    items = "\n".join(
        f'<li><a href="{html.escape(file_url(name))}">{html.escape(name)}</a></li>'
        for name in headline_artifacts(files)
    )
    return _page(
        f"Artifacts of {run.run_id}",
        f"<h1>{html.escape(run.dag_id)} / {html.escape(run.run_id)}</h1><pre>{head}</pre>"
        f"{ledgers}<h2>Artifacts</h2><ul>{items}</ul>",
    )


@app.get("/runs/{dag_id}/{run_id}/files/{name:path}")
def run_file(run: ReadableRun, name: str) -> Response:
    return artifact_response(run, name)


@app.get("/runs/{dag_id}/{run_id}/ledgers/{conn_id}", response_class=HTMLResponse)
def ledger_page(run: ReadableRun, conn_id: str) -> HTMLResponse:
    """One target's ledger: only a target the run itself names (its run.json), so reading a
    run never opens a connection that run did not use."""
    if conn_id not in {c for _, c in run_targets(run)}:
        raise not_found()
    return _page(
        f"Ledger of {conn_id}",
        f"<h1>Ledger of {html.escape(conn_id)}</h1><p>a target of {html.escape(run.dag_id)} / "
        f"{html.escape(run.run_id)}</p><pre>{html.escape(ledger_text(conn_id))}</pre>",
    )


class RunArtifactsLink(BaseOperatorLink):
    """'Rollout artifacts' on every task of the rollout DAGs: its run's artifact page."""

    name = "Rollout artifacts"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if ti_key.dag_id not in ROLLOUT_DAG_IDS:
            return ""
        return run_page_path(ti_key.dag_id, ti_key.run_id)


EXTERNAL_VIEW = {
    "name": "Rollout artifacts",
    "href": f"{URL_PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}/",
    "destination": "dag_run",
    "url_route": "rollout_artifacts",
}

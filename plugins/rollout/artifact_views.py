"""The artifacts of a rollout run in Airflow's UI: the run's review page (rollout/review.py:
the verdict, each step with its evidence, the ledgers, the approval, the files), a fleet
target's own page, the files themselves (Markdown also rendered), a Data Docs site as a zip,
the pages' stylesheet, and each target's ledger on its own. Every route reaches a run only
through `readable_run` (artifact_access.py): the run exists and the caller, by the UI's
session cookie or a bearer token, may read that DAG's runs."""

from __future__ import annotations

import html
import io
import logging
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.sdk import BaseOperatorLink
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from rollout.airflow_paths import URL_PREFIX, run_page_path
from rollout.artifact_access import (
    ARTIFACT_CSP,
    ReadableRun,
    RunArtifacts,
    SecurityHeaders,
    artifact_path,
    artifact_response,
    not_found,
    read_artifact,
    read_text,
    run_files,
    security_headers,
)
from rollout.review import RunRecord, markdown_page, review_page, target_page

log = logging.getLogger("rollout")

DAG_ID = "migration_rollout"
FLEET_DAG_ID = "fleet_rollout"
ROLLOUT_DAG_IDS = (DAG_ID, FLEET_DAG_ID)  # the DAGs that write artifacts (dags/)
# A fleet run may have a hundred targets: past this many, the run's page links each target's
# ledger instead of opening a connection to every one of them for one page view.
INLINE_LEDGERS = 6
STYLESHEET = Path(__file__).parent / "static" / "review.css"

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
    from rollout import review

    record = RunRecord(run.dag_id, run.run_id, ["run.json"], lambda n: read_text(run, n))
    return review.run_targets(record)


def ledger_text(conn_id: str) -> str:
    """A target's ledger as `rollout status` shows it (read-only), without the connection's
    host, port, user or database: the page shows the id, the api-server's log any error."""
    found = current_ledger(conn_id)
    return found if isinstance(found, str) else found["table"]


def current_ledger(conn_id: str) -> dict[str, Any] | str:
    """A target's ledger now (read-only): its rows and its `rollout status` table, or why it
    could not be read, never with the connection's host, port, user or database."""
    from airflow.models.connection import Connection

    from rollout.status import read_status_and_rows, render_table
    from rollout.targets import dsn_from_connection

    try:
        dsn = dsn_from_connection(Connection.get_connection_from_secrets(conn_id))
        status, rows = read_status_and_rows(conn_id, dsn)
    except Exception:  # a page: say it failed, never fail it, never show the DSN
        log.warning("rollout artifacts: cannot read the ledger of %s", conn_id, exc_info=True)
        return (
            f"cannot read the ledger of {conn_id}: the connection is not defined here or its "
            "database did not answer (the api-server's log says which)"
        )
    status.database = status.target  # render_table prints the DSN beside the id otherwise
    return {"rows": [{k: _plain(v) for k, v in row.items()} for row in rows],
            "table": render_table([status])}  # fmt: skip


def _plain(value: Any) -> Any:
    """A ledger value as the report's ledger.json has it (timestamps as text), to compare."""
    return (
        value
        if value is None or isinstance(value, (str, int, float, bool, dict, list))
        else str(value)
    )


def live_states(session: Any, dag_id: str, run_id: str) -> tuple[dict[str, str], str | None]:
    """Airflow's state of each task of the run now (a mapped task's id with `_<map index>`, as
    the tasks see them) and the run's own state."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    rows = session.execute(
        select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
        )
    ).all()
    states = {
        (task if index < 0 else f"{task}_{index}"): str(getattr(state, "value", state))
        for task, index, state in rows
        if state is not None
    }
    run_state = session.scalar(
        select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id).limit(1)
    )
    return states, (str(getattr(run_state, "value", run_state)) if run_state else None)


def run_record(run: RunArtifacts, session: Any, *, ledgers: bool = True) -> RunRecord:
    """What the run's pages are made of: its files, its tasks' states now and, for up to
    INLINE_LEDGERS targets, their ledgers now."""
    files = run_files(run)
    names = set(files)
    states, run_state = live_states(session, run.dag_id, run.run_id)
    record = RunRecord(
        dag_id=run.dag_id,
        run_id=run.run_id,
        files=files,
        read=lambda name: read_text(run, name) if name in names else None,
        states=states,
        run_state=run_state,
    )
    targets = run_targets(run)
    if ledgers and len(targets) <= INLINE_LEDGERS:
        record.current = {conn_id: current_ledger(conn_id) for _, conn_id in targets}
    return record


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body>{body}</body></html>"
    )


@app.get("/runs/{dag_id}/{run_id}/", response_class=HTMLResponse)
def run_page(run: ReadableRun, session: SessionDep) -> HTMLResponse:
    """The run's review page: what the "Rollout artifacts" tab, the gate's link and the
    outcome notice open."""
    record = run_record(run, session)
    if not record.files:  # the caller may read the run: saying it has no files yet tells nothing
        raise HTTPException(404, "This run has no artifacts (yet).")
    return HTMLResponse(review_page(record))


@app.get("/runs/{dag_id}/{run_id}/targets/{conn_id}/", response_class=HTMLResponse)
def fleet_target_page(run: ReadableRun, session: SessionDep, conn_id: str) -> HTMLResponse:
    """One production target of a fleet run: its story, its ledger, its files (only a target
    the run's own plan names)."""
    if conn_id not in {c for role, c in run_targets(run) if role == "production"}:
        raise not_found()
    record = run_record(run, session, ledgers=False)
    record.current = {conn_id: current_ledger(conn_id)}
    page = target_page(record, conn_id)
    if page is None:
        raise not_found()
    return HTMLResponse(page)


@app.get("/runs/{dag_id}/{run_id}/view/{name:path}", response_class=HTMLResponse)
def markdown_view(run: ReadableRun, name: str) -> HTMLResponse:
    """A Markdown file of the run as a page (its raw text stays under files/)."""
    if not name.endswith(".md"):
        raise not_found()
    artifact_path(run, name)  # the same confinement as files/
    record = RunRecord(run.dag_id, run.run_id, [name], lambda n: read_text(run, n))
    page = markdown_page(record, name)
    if page is None:
        raise not_found()
    return HTMLResponse(page)


@app.get("/runs/{dag_id}/{run_id}/zip/{folder:path}")
def data_docs_zip(run: ReadableRun, folder: str) -> Response:
    """A Data Docs site of the run as one zip, kept as a download: the review page shows the
    same results itself, and served inside Airflow Data Docs stay sandboxed and unstyled (their
    styles and scripts come from public CDNs, which many production networks cannot reach)."""
    if not folder.endswith("/data-docs"):
        raise not_found()
    files = [f for f in run_files(run) if f.startswith(folder + "/")]
    if not files:
        raise not_found()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            archive.writestr(
                name.removeprefix(folder.rsplit("/", 1)[0] + "/"), read_artifact(run, name)
            )
    filename = folder.replace("/", "-") + ".zip"
    return Response(
        buffer.getvalue(),
        media_type="application/zip",
        headers={"Content-Security-Policy": ARTIFACT_CSP,
                 "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"},
    )  # fmt: skip


@app.get("/runs/{dag_id}/{run_id}/static/review.css")
def stylesheet(run: ReadableRun) -> Response:
    """The pages' stylesheet, from the plugin itself (PAGE_CSP allows styles from here only)."""
    return Response(STYLESHEET.read_bytes(), media_type="text/css; charset=utf-8")


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

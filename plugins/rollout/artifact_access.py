"""Who may read which artifact, and how one is served: the small functions every artifact route
of the plugin (artifact_views.py, and any later review page) is built on.

- `readable_run` (a FastAPI dependency) decides whether a request reaches a run's artifacts at
  all: the run exists in Airflow's metadata database and Airflow's own `requires_access_dag`
  lets this user read that DAG's runs. Every refusal past authentication is the same 404, so
  nobody learns which runs exist in DAGs they cannot read.
- `artifact_path` confines a file name to that run's folder: one relative name, and on local
  storage its real path (symlinks followed) inside the run's real folder.
- `artifact_response` serves a file so it can never act as a page of Airflow's origin: a
  sandboxing Content-Security-Policy (no scripts, no same-origin), and `nosniff`.
- `SecurityHeaders` puts `nosniff` and a strict CSP on every response of the plugin.

A `fastapi_apps` app is not behind Airflow's auth by itself (docs/verified-notes.md): the
checks here are all there is.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, HTTPException, Request
from fastapi.responses import Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rollout.airflow_paths import run_artifacts, safe_dag_id, safe_run_id
from rollout.artifacts import list_tree

log = logging.getLogger("rollout")

# Our own pages: no script, no style, nothing from elsewhere; framed only by Airflow's UI
# (external views show the run's page inside it).
PAGE_CSP = (
    "default-src 'none'; img-src 'self'; style-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'"
)
# An artifact: a sandbox without allow-scripts and without allow-same-origin. GX Data Docs put
# database values into their HTML unescaped; in the sandbox no script runs, and whatever the
# page is, it is not Airflow's origin (its cookies, its API). Styles and images may load so
# the reports stay readable; nothing loads from another host.
ARTIFACT_CSP = (
    "sandbox; default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # run artifacts are behind a login: no shared cache keeps them
}
# Shown as text, not downloaded: the reports people read in the browser.
TEXT_SUFFIXES = (".md", ".txt", ".json", ".xml", ".csv", ".log", ".sql")


def not_found() -> HTTPException:
    """The one answer to every refusal: a missing run, a DAG the user may not read, a name
    outside the run's folder all look alike."""
    return HTTPException(404, "Not found")


@dataclass(frozen=True)
class RunArtifacts:
    """A run the request may read, and its folder: a real local path (no symlink left in it)
    or, on object storage, the ObjectStoragePath."""

    dag_id: str
    run_id: str
    root: Any

    @property
    def local(self) -> bool:
        return isinstance(self.root, Path)


def readable_run(
    dag_id: str, run_id: str, request: Request, user: GetUserDep, session: SessionDep
) -> RunArtifacts:
    """The run's artifacts when the caller may read them, else 404 (unauthenticated: Airflow's
    own 401/403). The one decision every artifact route depends on."""
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    try:
        requires_access_dag("GET", DagAccessEntity.RUN, dag_id)(request, user)
    except HTTPException as exc:
        if exc.status_code == 403:
            raise not_found() from None
        raise
    found = session.scalar(
        select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id).limit(1)
    )
    if found is None:
        raise not_found()
    try:
        folder = run_artifacts(dag_id, run_id)
    except ValueError:  # a DAG id that cannot be a folder name has no artifacts
        raise not_found() from None
    return RunArtifacts(dag_id, run_id, _confined_root(folder, dag_id, run_id))


ReadableRun = Annotated[RunArtifacts, Depends(readable_run)]


def _local_path(path: Any) -> Path | None:
    """A local path for file:// storage (symlinks exist there), None for object storage."""
    if isinstance(path, Path):
        return path
    return Path(path.path) if getattr(path, "protocol", None) in ("file", "local") else None


def _confined_root(folder: Any, dag_id: str, run_id: str) -> Any:
    """The run's folder; locally its real path, which must be exactly <root>/<dag>/<run> with
    the root's own symlinks resolved: a run folder that is a link elsewhere reads nothing."""
    local = _local_path(folder)
    if local is None:
        return folder
    # run_artifacts made <root>/<dag>/<run> of two plain names: two levels up is the root.
    base = Path(os.path.realpath(local.parent.parent))
    expected = base / safe_dag_id(dag_id) / safe_run_id(run_id)
    if Path(os.path.realpath(local)) != expected:
        raise not_found()
    return expected


def _name_parts(name: str) -> list[str]:
    """A relative file name's parts, or 404: never empty, '.', '..', a backslash or a NUL."""
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise not_found()
    return parts


def artifact_path(run: RunArtifacts, name: str) -> Any:
    """The file `name` of the run, or 404. Locally the real path, symlinks followed, must lie
    inside the run's folder (a link to another run's or Airflow's own files reads nothing)."""
    _name_parts(name)
    if not run.local:
        path = run.root / name  # no symlinks in object storage; the name has no '..'
        if not path.is_file():
            raise not_found()
        return path
    real = Path(os.path.realpath(run.root / name))
    if run.root not in real.parents or not real.is_file():
        raise not_found()
    return real


def read_artifact(run: RunArtifacts, name: str) -> bytes:
    """The bytes of `name` (artifact_path's checks), opened so that a symlink swapped in after
    the check is not followed: each part of the real path below the run's folder is opened
    with O_NOFOLLOW from the one above it."""
    path = artifact_path(run, name)
    if not run.local:
        return path.read_bytes()
    parts = path.relative_to(run.root).parts
    folder_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        directory = os.open(run.root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        raise not_found() from None
    try:
        for part in parts[:-1]:
            below = os.open(part, folder_flags, dir_fd=directory)
            os.close(directory)
            directory = below
        # O_NONBLOCK: a FIFO planted in the folder must not hold this request open forever.
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
    except OSError:
        raise not_found() from None
    finally:
        os.close(directory)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise not_found()
        return file.read()


def read_text(run: RunArtifacts, name: str) -> str | None:
    """A text artifact, or None when the run has no such file."""
    try:
        return read_artifact(run, name).decode("utf-8", "replace")
    except HTTPException:
        return None


def run_files(run: RunArtifacts) -> list[str]:
    """Every file of the run, as relative names, sorted: locally without following a symlinked
    folder, and without any name artifact_path would refuse."""
    if not run.local:
        return list_tree(run.root)
    found = []
    for folder, dirs, files in os.walk(run.root, followlinks=False):
        dirs.sort()
        prefix = Path(folder).relative_to(run.root).as_posix()
        found += [f if prefix == "." else f"{prefix}/{f}" for f in files]
    return sorted(name for name in found if _serves(run, name))


def _serves(run: RunArtifacts, name: str) -> bool:
    try:
        artifact_path(run, name)
    except HTTPException:
        return False
    return True


def media_type(name: str) -> str:
    if name.endswith(TEXT_SUFFIXES):
        return "text/plain; charset=utf-8"  # shown, not downloaded
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


def artifact_response(run: RunArtifacts, name: str) -> Response:
    """The file `name` of the run, served sandboxed (ARTIFACT_CSP): shown in the browser, never
    as a live page of Airflow's origin."""
    filename = quote(name.rsplit("/", 1)[-1])
    return Response(
        read_artifact(run, name),
        media_type=media_type(name),
        headers={
            "Content-Security-Policy": ARTIFACT_CSP,
            "Content-Disposition": f"inline; filename*=UTF-8''{filename}",
        },
    )


def file_url(name: str) -> str:
    """A run file's link, relative to the run's page."""
    return "files/" + quote(name)


class SecurityHeaders:
    """ASGI middleware: `nosniff`, no referrer, no caching on every response of the plugin, and
    PAGE_CSP wherever a route did not set its own (artifact_response sets the sandbox)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_security_headers(MutableHeaders(scope=message))
            await send(message)

        await self.app(scope, receive, send_with_headers)


def add_security_headers(headers: MutableHeaders) -> None:
    for key, value in SECURITY_HEADERS.items():
        headers[key] = value
    if "content-security-policy" not in headers:
        headers["Content-Security-Policy"] = PAGE_CSP


def security_headers() -> dict[str, str]:
    """The headers for a response made outside the middleware (the app's 500 handler)."""
    return {**SECURITY_HEADERS, "Content-Security-Policy": PAGE_CSP}

"""The plugin's routes as Airflow mounts them (issue 16 points 1, 2, 5; issue 15 point 12): only
runs that exist and that the caller may read, only files inside their folder, every artifact
sandboxed, no API docs, ledgers only of a readable run's own targets."""

from __future__ import annotations

import types
from urllib.parse import quote

import pytest

from tests.plugin.auth_manager import HIDDEN_DAG, OUTSIDER
from tests.plugin.conftest import (
    DAG,
    FLEET_DAG,
    FLEET_RUN,
    FLEET_TARGETS,
    HIDDEN_RUN,
    LINKED_RUN,
    NOT_A_TARGET,
    ORPHAN_FOLDER,
    RUN,
    STORED_SCRIPT,
)

PAGE = f"/rollout/runs/{DAG}/{quote(RUN, safe=':+')}/"
FLEET_PAGE = f"/rollout/runs/{FLEET_DAG}/{quote(FLEET_RUN, safe=':+')}/"
PASSWORDS = "airflow/auth/passwords.json"  # from <root>/opt: two levels above the artifacts

# Every way out of a run's folder: sent as written (no client normalisation).
TRAVERSALS = {
    "raw dot segments as dag and run": f"/rollout/runs/../../files/{PASSWORDS}",
    "encoded dot segments": f"/rollout/runs/%2E%2E/%2E%2E/files/{PASSWORDS}",
    "lower-case encoded": f"/rollout/runs/%2e%2e/%2e%2e/files/{PASSWORDS}",
    "double-encoded": f"/rollout/runs/%252E%252E/%252E%252E/files/{PASSWORDS}",
    "run id '..' reads another DAG": f"/rollout/runs/{DAG}/%2E%2E/files/{HIDDEN_DAG}/"
    f"{HIDDEN_RUN}/payroll.txt",
    "run id '..' lists the tree": f"/rollout/runs/{DAG}/%2E%2E/",
    "run id '.' lists the DAG's runs": f"/rollout/runs/{DAG}/%2E/",
    "raw run id '.'": f"/rollout/runs/{DAG}/./",
    "file name with raw dot segments": f"{PAGE}files/../../../../{PASSWORDS}",
    "file name with encoded dot segments": f"{PAGE}files/%2E%2E/%2E%2E/%2E%2E/%2E%2E/{PASSWORDS}",
    "file name with encoded slashes": f"{PAGE}files/..%2F..%2F..%2F..%2F{PASSWORDS}",
    "absolute file name": f"{PAGE}files//{PASSWORDS}",
    "a folder with no run": f"/rollout/runs/{DAG}/{ORPHAN_FOLDER}/files/orphan.txt",
    "a DAG with no such run": f"/rollout/runs/no_such_dag/{quote(RUN, safe=':+')}/",
    "symlink in the run to a file outside": f"{PAGE}files/leak.txt",
    "symlink in the run to a folder outside": f"{PAGE}files/outside/passwords.json",
    "a run folder that is a symlink": f"/rollout/runs/{DAG}/{LINKED_RUN}/files/passwords.json",
    "a run folder that is a symlink, its page": f"/rollout/runs/{DAG}/{LINKED_RUN}/",
    "a FIFO in the run's folder": f"{PAGE}files/pipe.txt",
}


@pytest.mark.parametrize("path", TRAVERSALS.values(), ids=TRAVERSALS.keys())
def test_nothing_outside_a_readable_runs_folder_is_served(plugin_server, path):
    status, headers, body = plugin_server.raw_get(path)
    assert status == 404, body[:300]
    for secret in plugin_server.secrets:
        assert secret.encode() not in body
    assert headers["x-content-type-options"] == "nosniff"


def test_a_readable_run_is_served_symlinks_inside_it_included(plugin_server):
    page = plugin_server.get(PAGE)
    assert page.status_code == 200, page.text
    assert "db-diff.txt" in page.text and "data-docs/index.html" in page.text
    assert "static/fonts" not in page.text  # Data Docs by their index page only
    for planted in ("leak.txt", "outside/", "pipe.txt"):
        assert planted not in page.text
    assert plugin_server.get(PAGE + "files/db-diff.txt").text.startswith("db-diff: staging")
    assert plugin_server.get(PAGE + "files/same-diff.txt").text.startswith("db-diff: staging")


def test_a_dag_the_user_may_not_read_is_not_found_not_forbidden(plugin_server):
    page = f"/rollout/runs/{HIDDEN_DAG}/{HIDDEN_RUN}/"
    assert plugin_server.get(page + "files/payroll.txt").text == "PAYROLL-ARTIFACT\n"
    for path in (page, page + "files/payroll.txt", page + "files/nothing.txt"):
        response = plugin_server.get(path, user=OUTSIDER)
        assert response.status_code == 404 and "PAYROLL" not in response.text
    assert plugin_server.get(PAGE, user=OUTSIDER).status_code == 200


@pytest.mark.parametrize(
    "path",
    [PAGE, PAGE + "files/db-diff.txt", PAGE + "ledgers/p_plugin", "/rollout/runs/x/y/"],
)
def test_unauthenticated_requests_are_refused(plugin_server, path):
    status, headers, body = plugin_server.raw_get(path, user=None)
    assert status == 401 and b"db-diff" not in body
    assert headers["x-content-type-options"] == "nosniff"
    forged = plugin_server.get(path, user=None)
    assert forged.status_code in (401, 403)


def test_artifact_html_is_sandboxed_and_our_pages_have_a_strict_policy(plugin_server):
    for name in ("staging/validation/data-docs/index.html", "summary.html"):
        response = plugin_server.get(PAGE + "files/" + name)
        assert response.status_code == 200 and STORED_SCRIPT in response.text
        assert response.headers["content-type"].startswith("text/html")
        csp = response.headers["content-security-policy"]
        directives = [d.strip() for d in csp.split(";")]
        assert "sandbox" in directives  # sandboxed, and allowing neither scripts nor the origin
        assert "allow-scripts" not in csp and "allow-same-origin" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
    text = plugin_server.get(PAGE + "files/db-diff.txt")
    assert text.headers["content-type"].startswith("text/plain")
    assert "sandbox" in text.headers["content-security-policy"]

    page = plugin_server.get(PAGE)
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "script-src" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script" not in page.text


@pytest.mark.parametrize("path", ["/rollout/docs", "/rollout/redoc", "/rollout/openapi.json"])
def test_the_plugins_api_docs_are_off(plugin_server, path):
    for user in (None, "admin"):
        response = plugin_server.get(path, user=user)
        assert response.status_code == 404, response.text[:200]
        assert response.headers["x-content-type-options"] == "nosniff"


def test_ledgers_only_of_a_readable_runs_own_targets_without_host_or_user(plugin_server):
    page = plugin_server.get(PAGE).text
    assert "Ledger of production (p_plugin)" in page
    assert "20251113203000  applied" in page and RUN in page
    ledger = plugin_server.get(PAGE + "ledgers/p_plugin")
    assert ledger.status_code == 200 and "20251113203000  applied" in ledger.text
    # The old free route and any connection the run did not name: not found.
    for path in (f"/rollout/ledger/{NOT_A_TARGET}", "/rollout/ledger/p_plugin",
                 f"{PAGE}ledgers/{NOT_A_TARGET}", f"{PAGE}ledgers/..%2Fp_plugin"):  # fmt: skip
        assert plugin_server.get(path).status_code == 404, path
    hidden = f"/rollout/runs/{HIDDEN_DAG}/{HIDDEN_RUN}/ledgers/p_plugin"
    assert plugin_server.get(hidden, user=OUTSIDER).status_code == 404
    # The connection's host (the socket folder), port and user stay off the pages.
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(plugin_server.target_dsn)
    for text in (page, ledger.text):
        assert "host=" not in text and "user=" not in text and "port=" not in text
        assert params["host"] not in text


def test_the_fleet_runs_page_renders_with_a_list_of_production_targets(plugin_server):
    page = plugin_server.get(FLEET_PAGE)
    assert page.status_code == 200, page.text[:500]
    for conn_id in FLEET_TARGETS:
        assert f"Ledger of production ({conn_id})" in page.text
    assert "Ledger of staging (s_plugin)" in page.text  # not defined here: says so
    assert "targets/p_plugin/production/perf/perf-monitor.md" in page.text
    assert plugin_server.get(FLEET_PAGE + "ledgers/f_plugin_1").status_code == 200


def test_the_artifacts_link_and_view_work_for_both_dags():
    from rollout.artifact_views import EXTERNAL_VIEW, RunArtifactsLink

    link = RunArtifactsLink()
    for dag_id, run_id in ((DAG, RUN), (FLEET_DAG, FLEET_RUN)):
        key = types.SimpleNamespace(dag_id=dag_id, run_id=run_id, task_id="preflight")
        assert link.get_link(None, ti_key=key) == f"/rollout/runs/{dag_id}/{run_id}/"
        view = EXTERNAL_VIEW["href"].replace("{DAG_ID}", dag_id).replace("{RUN_ID}", run_id)
        assert view == f"/rollout/runs/{dag_id}/{run_id}/"
    other = types.SimpleNamespace(dag_id="someone_elses_dag", run_id=RUN, task_id="t")
    assert link.get_link(None, ti_key=other) == ""

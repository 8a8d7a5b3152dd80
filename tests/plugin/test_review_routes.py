"""The review page's routes as Airflow mounts them (issue 17): the page itself under the strict
policy with its stylesheet served by the plugin, a Markdown file rendered, a Data Docs site as
a zip, a fleet target's own page; each behind the same login and the same confinement as the
files, and a stored value never markup."""

from __future__ import annotations

import io
import zipfile

import pytest

from tests.plugin.auth_manager import HIDDEN_DAG, OUTSIDER
from tests.plugin.conftest import HIDDEN_RUN, STORED_SCRIPT
from tests.plugin.test_artifact_security import FLEET_PAGE, PAGE


def test_the_review_page_styles_itself_from_the_plugin_under_the_strict_policy(plugin_server):
    page = plugin_server.get(PAGE)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "style-src 'self'" in csp and "unsafe-inline" not in csp and "script-src" not in csp
    assert '<link rel="stylesheet" href="static/review.css">' in page.text
    css = plugin_server.get(PAGE + "static/review.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert ".verdict" in css.text and "@import" not in css.text and "url(" not in css.text
    # What a step recorded of a database value is text on the page, never markup.
    assert "<script" not in page.text and "&lt;script&gt;" in page.text
    assert "a stored value" in page.text  # the failing catalog check, shown


@pytest.mark.parametrize(
    "path",
    [PAGE + "static/review.css", PAGE + "view/summary.md", PAGE + "zip/staging/validation/data-docs",
     FLEET_PAGE + "targets/p_plugin/"],
)  # fmt: skip
def test_every_review_route_needs_a_login_and_a_readable_run(plugin_server, path):
    assert plugin_server.raw_get(path, user=None)[0] == 401
    hidden = path.replace(PAGE, f"/rollout/runs/{HIDDEN_DAG}/{HIDDEN_RUN}/").replace(
        FLEET_PAGE, f"/rollout/runs/{HIDDEN_DAG}/{HIDDEN_RUN}/"
    )
    assert plugin_server.get(hidden, user=OUTSIDER).status_code == 404


def test_a_markdown_file_is_rendered_as_a_page_and_stays_text(plugin_server):
    page = plugin_server.get(PAGE + "view/staging/validation/validation-report.md")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<h1>Validation</h1>" in page.text
    assert STORED_SCRIPT not in page.text and "&lt;script&gt;" in page.text
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    raw = plugin_server.get(PAGE + "files/staging/validation/validation-report.md")
    assert (
        raw.text.startswith("# Validation") and "sandbox" in raw.headers["content-security-policy"]
    )
    for path in ("view/db-diff.txt", "view/leak.md", "view/nothing.md", "view/%2E%2E/%2E%2E/x.md"):
        assert plugin_server.raw_get(PAGE + path)[0] == 404, path


def test_data_docs_are_kept_as_one_zip_download(plugin_server):
    response = plugin_server.get(PAGE + "zip/staging/validation/data-docs")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith("attachment;")
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(archive.namelist()) == [
        "data-docs/index.html",
        "data-docs/static/fonts/font.woff",
    ]
    for path in ("zip/staging/validation", "zip/outside/data-docs", "zip/%2E%2E/data-docs"):
        assert plugin_server.raw_get(PAGE + path)[0] == 404, path


def test_a_fleet_targets_page_is_only_for_a_target_the_run_names(plugin_server):
    page = plugin_server.get(FLEET_PAGE + "targets/p_plugin/")
    assert page.status_code == 200
    assert "p_plugin: wave 0 (canary)" in page.text
    assert "targets/p_plugin/production/perf/perf-monitor.md" in page.text
    assert "Ledger of production (p_plugin)" in page.text  # read now: this run kept none
    assert '<link rel="stylesheet" href="../../static/review.css">' in page.text
    fleet = plugin_server.get(FLEET_PAGE)
    assert '<a href="targets/p_plugin/">p_plugin</a>' in fleet.text
    for conn_id in ("secret_db", "s_plugin", "..", "p_plugin%2F.."):
        assert plugin_server.raw_get(FLEET_PAGE + f"targets/{conn_id}/")[0] == 404, conn_id

"""Markdown a run wrote, as HTML fit for a page of Airflow's origin: tables rendered, anything a
database value could smuggle in (a tag, a script link, an image from elsewhere) left inert."""

from __future__ import annotations

from rollout.markdown_html import render_markdown
from rollout.report import summary_html

REPORT = """# Validation of production: post_migration — FAILED

| check | result | found |
|---|---|---|
| outbox event types | FAILED | <script>fetch('/api/v2/dags')</script> |

- [Data Docs](data-docs/index.html), [elsewhere](https://example.com/x)
- [a trap](javascript:alert(1)) ![tracker](https://example.com/pixel.png)
"""


def test_tables_render_and_what_a_value_smuggles_in_stays_text():
    page = render_markdown(REPORT)
    assert "<table>" in page and "<td>FAILED</td>" in page
    assert "<script" not in page and "&lt;script&gt;" in page
    assert 'href="javascript' not in page
    assert "<img" not in page  # nothing is loaded from anywhere by a rendered text
    assert '<a href="https://example.com/x">elsewhere</a>' in page  # a link, not a load


def test_relative_links_are_rebased_onto_the_runs_files():
    page = render_markdown(REPORT, lambda href: f"../files/production/validation/{href}")
    assert 'href="../files/production/validation/data-docs/index.html"' in page
    assert 'href="https://example.com/x"' in page  # only relative links move


def test_the_summary_page_is_the_summary_rendered_and_loads_nothing():
    page = summary_html(
        "# Rollout 1: succeeded\n\n| task | state |\n|---|---|\n| preflight | success |\n",
        "succeeded",
    )
    assert "<h1>Rollout 1: succeeded</h1>" in page and "<td>preflight</td>" in page
    assert "<pre>" not in page and "src=" not in page and "<link" not in page

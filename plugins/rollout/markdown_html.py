"""Markdown to HTML for people, by markdown-it-py (CommonMark, with tables): the run's summary,
the reports a step writes, the approval's text.

What a run writes can carry database values (a failing test's message, a catalog check's
finding), so the HTML is safe to put in a page of Airflow's origin: raw HTML in the Markdown
is escaped, never passed through; links keep markdown-it's own check (no `javascript:`,
`vbscript:`, `file:` or `data:`); images are not rendered as images, so nothing is loaded
from anywhere by a rendered text. Relative links can be rebased onto the files they name.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from markdown_it import MarkdownIt

LinkRewrite = Callable[[str], str]


@cache
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table").disable("image")


def is_relative(href: str) -> bool:
    """A link to a file beside the text: no scheme, no host, not absolute, not an anchor."""
    return bool(href) and ":" not in href.split("/", 1)[0] and not href.startswith(("/", "#"))


def render_markdown(text: str, rewrite: LinkRewrite | None = None) -> str:
    """The Markdown `text` as an HTML fragment; `rewrite` maps each relative link's target
    (e.g. onto the run's files route)."""
    md = _parser()
    tokens = md.parse(text)
    if rewrite is not None:
        for token in tokens:
            for child in token.children or []:
                if child.type == "link_open":
                    href = str(child.attrGet("href") or "")
                    if is_relative(href):
                        child.attrSet("href", rewrite(href))
    return md.renderer.render(tokens, md.options, {})

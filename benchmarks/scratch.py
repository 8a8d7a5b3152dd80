"""Scratch databases for the benchmarks: on the server named by --dsn, or an embedded cluster.

Side-by-side measurements need identical data on each side. `seeded_database` seeds a size
once per server and process into a template database, then hands out clones of it
(`CREATE DATABASE … TEMPLATE`, seconds instead of the minutes a 1M seed takes). Every
database made here is dropped again, templates included, when the process ends.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from rollout import db
from rollout.baseline import apply_baseline
from rollout.clusters import start_cluster
from rollout.seed import SeedResult, seed_database

EMBEDDED = "embedded"
# The same anchor everywhere, so every benchmark's data is the same for the same size.
SEED_ANCHOR = dt.date(2026, 12, 1)

_templates: dict[tuple[str, int], tuple[str, SeedResult]] = {}


def admin_dsn(server: str | None) -> str:
    """The admin DSN of a server: `embedded` (or None) starts the embedded cluster `bench`."""
    return start_cluster("bench").dsn if server in (None, EMBEDDED) else server


@contextmanager
def scratch_database(admin: str | None) -> Iterator[str]:
    """Yield the DSN of a new, empty database; drop it afterwards, whatever happened."""
    admin = admin_dsn(admin)
    name = f"rollout_bench_{uuid.uuid4().hex[:8]}"
    dsn = db.create_database(admin, name)
    try:
        yield dsn
    finally:
        db.drop_database(admin, name)


def seeded_template(admin: str, allocations: int) -> tuple[str, SeedResult]:
    """The template database of that size on that server (seeded on first use) and how its
    seeding went: the seed benchmark's figure is this seeding."""
    key = (admin, allocations)
    if key not in _templates:
        name = f"rollout_bench_tpl_{uuid.uuid4().hex[:8]}"
        dsn = db.create_database(admin, name)
        try:
            with db.connect(dsn) as conn:
                apply_baseline(conn)
                result = seed_database(
                    conn, allocations, anchor=SEED_ANCHOR, progress=lambda m: None
                )
                # Visibility map and statistics set, as on a long-lived production table.
                conn.execute("VACUUM ANALYZE")
        except BaseException:
            db.drop_database(admin, name)  # a half-seeded template is never left behind
            raise
        _templates[key] = (name, result)
    return _templates[key]


@atexit.register
def drop_templates() -> None:
    """Drop every template this process seeded (at exit, or earlier when the caller is done)."""
    while _templates:
        (admin, _), (name, _) = _templates.popitem()
        db.drop_database(admin, name)


@contextmanager
def seeded_database(admin: str | None, allocations: int) -> Iterator[str]:
    """Yield the DSN of a baseline database seeded with `allocations` allocations (a clone of
    this process's template for that server and size); drop it afterwards."""
    admin = admin_dsn(admin)
    template, _ = seeded_template(admin, allocations)
    name = f"rollout_bench_{uuid.uuid4().hex[:8]}"
    dsn = db.create_database(admin, name, template=template)
    try:
        yield dsn
    finally:
        db.drop_database(admin, name)


def server_label(dsn: str) -> str:
    """`PostgreSQL 18.6 (embedded)` or `PostgreSQL 15.19 (127.0.0.1:5432)`."""
    with db.connect(dsn) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        host, port = conn.info.host, conn.info.port
    where = "embedded" if host.startswith("/") else f"{host}:{port}"
    return f"PostgreSQL {version} ({where})"


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark shares: its docstring as help, and --dsn."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dsn", help="admin DSN of a server (default: an embedded cluster `bench`)"
    )
    return parser

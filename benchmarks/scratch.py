"""A scratch database for a benchmark: on the server named by --dsn, or an embedded cluster."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from rollout import db
from rollout.clusters import start_cluster


@contextmanager
def scratch_database(admin_dsn: str | None) -> Iterator[str]:
    """Yield the DSN of a new database; drop it afterwards, whatever happened."""
    admin = admin_dsn or start_cluster("bench").dsn
    name = f"rollout_bench_{uuid.uuid4().hex[:8]}"
    dsn = db.create_database(admin, name)
    try:
        yield dsn
    finally:
        db.drop_database(admin, name)


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark shares: its docstring as help, and --dsn."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dsn", help="admin DSN of a server (default: an embedded cluster `bench`)"
    )
    return parser

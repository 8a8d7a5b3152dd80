"""Row counts and content checksums of tables: proof that rows were left as they were."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql


def table_checksums(conn: psycopg.Connection, tables: Iterable[str]) -> dict[str, tuple[int, str]]:
    """{table: (row count, md5 over every row's text in a stable order)} for public tables."""
    result = {}
    for table in tables:
        query = sql.SQL(
            "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '')"
            " FROM public.{} AS t"
        ).format(sql.Identifier(table))
        count, digest = conn.execute(query).fetchone()
        result[table] = (count, digest)
    return result

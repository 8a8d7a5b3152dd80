"""Reading a libpq connection string (a DSN) that a person wrote: a malformed one is one line
naming where it came from (`--dsn`, an Airflow connection, ROLLOUT_STAGING_DSN, ...), never
psycopg's traceback, and never the password or a key path it may hold."""

from __future__ import annotations

import re

import psycopg
from psycopg.conninfo import conninfo_to_dict

from rollout.errors import RolloutError

# libpq parameters whose values are secrets (a password) or say where one lies (a client key):
# masked in messages, never written to an artifact (rollout.secrets).
SECRET_PARAMS = ("password", "sslpassword", "sslkey")

HOW_TO_WRITE = (
    "write it as postgresql://user@host:5432/dbname?sslmode=verify-full (percent-encode spaces "
    "and '&' in values) or as key=value pairs: host=… port=5432 dbname=… sslmode=verify-full"
)


class MalformedDsn(RolloutError):
    """A connection string libpq cannot parse; the message names where it was given."""


def parse_dsn(dsn: str, source: str = "the DSN") -> dict[str, str]:
    """The DSN's parameters, or MalformedDsn naming `source` and how to write it."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise MalformedDsn(f"{source}: the connection string is empty; {HOW_TO_WRITE}")
    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise MalformedDsn(
            f"{source}: not a PostgreSQL connection string ({_reason(exc, dsn)}); {HOW_TO_WRITE}"
        ) from None


def check_dsn(dsn: str, source: str) -> str:
    """The DSN unchanged once it parses; MalformedDsn naming `source` when it does not."""
    parse_dsn(dsn, source)
    return dsn


def _reason(exc: Exception, dsn: str) -> str:
    """libpq's complaint, on one line. It quotes the fragment it stumbled on, which may be part
    of a password: when the DSN holds a secret, only fragments that are parameter names stay."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    has_secret = re.search(r"password|sslkey|://[^/@?]*:[^/@?]*@", dsn, re.IGNORECASE)
    if not has_secret:
        return reason
    names = {bytes(d.keyword).decode() for d in psycopg.pq.Conninfo.get_defaults()}
    return re.sub(
        r'"([^"]*)"', lambda m: m.group(0) if m.group(1) in names | {"="} else '"…"', reason
    )

"""Targets are Airflow connections (`rollout_staging`, `rollout_production` by default): this
turns one into the libpq DSN the rest of the project takes."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from rollout.dsn import MalformedDsn, check_dsn
from rollout.errors import TargetUnavailable
from rollout.secrets import remember, remember_dsn

# Connection extras that libpq understands and a hosted database may need.
LIBPQ_EXTRAS = (
    "sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl", "sslnegotiation",
    "options", "target_session_attrs",
)  # fmt: skip


def dsn_from_connection(conn: Any) -> str:
    """libpq DSN of an Airflow connection (host may be a socket folder, as the embedded
    clusters use)."""
    extras = conn.extra_dejson if conn.extra else {}
    params = {
        "host": conn.host,
        "port": conn.port,
        "user": conn.login,
        "password": conn.password,
        "dbname": conn.schema,
        **{k: v for k, v in extras.items() if k in LIBPQ_EXTRAS},
    }
    return make_conninfo(**{k: v for k, v in params.items() if v not in (None, "")})


def resolve_target(conn_id: str) -> str:
    """The DSN behind an Airflow connection id, or a message that says how to define it."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        variable = f"AIRFLOW_CONN_{conn_id.upper()}"
        if os.environ.get(variable):  # set, but Airflow could not read it
            raise MalformedDsn(
                f"{variable}: Airflow cannot read it as a connection: write it as a URI "
                "(postgresql://user:password@host:5432/dbname?sslmode=verify-full, "
                "percent-encoding special characters) or as JSON with conn_type, host, port, "
                "login, password, schema and extra"
            ) from None
        raise TargetUnavailable(
            f"the Airflow connection {conn_id!r} is not defined: add it under Admin > Connections "
            f"(type postgres), or set AIRFLOW_CONN_{conn_id.upper()} to its URI or JSON"
        ) from None
    if not conn.host and not conn.schema:
        raise TargetUnavailable(f"the Airflow connection {conn_id!r} names no host or database")
    if conn.extra_dejson.get("iam"):
        conn = _with_iam_token(conn_id, conn)
    remember(conn.password)  # never to be written to an artifact (rollout.secrets)
    source = f"the Airflow connection {conn_id!r}"
    try:
        dsn = dsn_from_connection(conn)
    except psycopg.ProgrammingError as exc:  # an extra libpq refuses, e.g. a stray quote
        raise MalformedDsn(f"{source}: {' '.join(str(exc).split())}; fix its fields") from None
    remember_dsn(dsn)  # its client key path, too
    return check_dsn(dsn, source)


def _with_iam_token(conn_id: str, conn: Any) -> Any:
    """A cloud IAM login (extras `{"iam": true, "aws_conn_id": …}`, as the Postgres provider's
    PostgresHook documents them): a short-lived token in place of the password."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    try:
        login, token, port = PostgresHook(postgres_conn_id=conn_id).get_iam_token(conn)
    except Exception as exc:  # the cloud provider missing, or no credentials
        raise TargetUnavailable(
            f"the Airflow connection {conn_id!r} asks for an IAM login, which failed: {exc}"
        ) from None
    conn.login, conn.password, conn.port = login, token, port
    return conn

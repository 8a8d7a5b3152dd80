"""The one way this project opens a PostgreSQL connection and manages databases."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from rollout.dsn import SECRET_PARAMS, parse_dsn
from rollout.errors import RolloutError, TargetUnavailable
from rollout.paths import sql_text
from rollout.secrets import remember_dsn, scrub_text

CONNECT_TIMEOUT_S = 5


def connect(
    dsn: str,
    *,
    autocommit: bool = True,
    session_settings: Mapping[str, str] | None = None,
    session_only: bool = False,
    **overrides: object,
) -> psycopg.Connection:
    """Open a connection, or raise TargetUnavailable with a message that says what to check.

    Autocommit by default: a step opens its transactions explicitly (`conn.transaction()`),
    and a read never leaves one open holding locks or an old snapshot. `session_settings` are
    set for the whole session right after connecting (`set_config(…, false)`: PgBouncer
    refuses libpq's `options` startup parameter).

    `session_only`: the caller keeps state in the session (the rollout's steps), so a
    transaction-mode pooler is refused (rollout.pooler.TransactionPoolerRefused) before
    anything is set, `application_name` included: it is set after the check, not sent at
    startup, where a pooler would keep it on its server connection.

    A malformed DSN is MalformedDsn, one line (callers that know where it came from check it
    first with rollout.dsn.check_dsn, naming the flag or connection).
    """
    parse_dsn(dsn)  # a malformed DSN is MalformedDsn, one line, before anything else
    remember_dsn(dsn)  # never to be written to an artifact (rollout.secrets)
    params: dict[str, object] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": "rollout",
    }
    params.update(overrides)
    settings = dict(session_settings or {})
    if session_only:
        settings = {"application_name": str(params["application_name"]), **settings}
        params["application_name"] = ""  # libpq sends no application_name then
    try:
        conn = psycopg.connect(dsn, autocommit=True, **params)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # libpq names the files it could not use (a client key's path among them): scrubbed,
        # as the message goes to task logs and failure notes.
        reason = scrub_text(reason)
        raise TargetUnavailable(
            f"cannot connect to {redact(dsn)}: {reason}. Is the server running and the DSN "
            "right? (embedded clusters: `python -m rollout db start`)"
        ) from exc
    try:
        if session_only:
            from rollout.pooler import require_session

            require_session(conn, dsn, redact(dsn))
        for name, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        conn.autocommit = autocommit
    except BaseException:
        conn.close()
        raise
    return conn


def redact(dsn: str) -> str:
    """The DSN with its password and client key path masked, for messages and logs."""
    try:
        params = parse_dsn(dsn)
    except RolloutError:
        return "<unparsable DSN>"
    for name in SECRET_PARAMS:
        if params.get(name):
            params[name] = "***"
    return make_conninfo(**params)


def with_database(dsn: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    params = parse_dsn(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


def with_user(dsn: str, user: str) -> str:
    params = parse_dsn(dsn)
    params["user"] = user
    params.pop("password", None)
    return make_conninfo(**params)


def create_database(
    admin_dsn: str, name: str, *, owner: str | None = None, template: str | None = None
) -> str:
    """Create a database on admin_dsn's server; return its DSN."""
    stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if owner:
        stmt += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    if template:
        stmt += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with connect(admin_dsn, autocommit=True) as conn:
        conn.execute(stmt)
    return with_database(admin_dsn, name)


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop a database if it exists, disconnecting its sessions first."""
    with connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_exists(admin_dsn: str, name: str) -> bool:
    with connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def run_sql_file(conn: psycopg.Connection, path: Path) -> None:
    """Execute a whole .sql file as one multi-statement query (no parameters)."""
    conn.execute(sql_text(path).encode())


def server_version(conn: psycopg.Connection) -> int:
    """The server's major version, e.g. 15 or 18."""
    return conn.info.server_version // 10000


def require_no_transaction(conn: psycopg.Connection, step: str) -> None:
    """Steps that commit their own transaction must not run inside someone else's."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RolloutError(
            f"{step} runs its own transaction, but the connection is inside one: "
            "commit or roll back first (or use an autocommit connection)"
        )

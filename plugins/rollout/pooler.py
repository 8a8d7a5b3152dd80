"""Whether a connection reaches a session of its own, or a transaction-mode pooler.

Through a transaction-mode pooler (PgBouncer `pool_mode = transaction`, Supabase's port 6543)
each transaction may run on another server connection, shared with other clients: whatever a
session sets (an advisory lock, `application_name`, a `SET`) stays on a server connection the
application then uses, and nothing that spans transactions holds. The rollout's steps need a
session (their lock spans several transactions; the online apply spans minutes), so they
refuse such a connection before setting or changing anything (`db.connect(session_only=True)`).

How it is told, since a quiet pooler hands one client the same server connection every time
(`pg_backend_pid()` alone proves nothing): the connection notes its server session (pid and
start), then a second client holds a transaction open while the first asks again. A pooler that
shares server connections shows it either way: the second client is handed the first one's
server session (PgBouncer's default, the connection last released goes out first), or the
first, its own now taken, answers from another. A direct connection or a session pooler never
does either. Limit: a pooler that hands out its idle connections in another order can, on a
quiet pool, pass the second client another idle connection and the first its own again; such
a pool is still caught by its address where it is known (Supabase's transaction port).
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

from rollout.errors import RolloutError
from rollout.paths import SQL_DIR, sql_text

SERVER_SESSION_SQL = SQL_DIR / "pooler" / "server_session.sql"
# Supabase's transaction-mode pooler (Supavisor or its PgBouncer): this port on these hosts.
SUPABASE_POOLER_DOMAIN = ".pooler.supabase.com"
SUPABASE_TRANSACTION_PORT = "6543"


class TransactionPoolerRefused(RolloutError):
    """The DSN leads to a transaction-mode pooler, where a step's session state would leak."""


def server_session(conn: psycopg.Connection) -> tuple:
    """(pid, backend_start) of the server session that answers on conn now."""
    return tuple(conn.execute(sql_text(SERVER_SESSION_SQL).encode()).fetchone())


def known_transaction_pooler(dsn: str) -> str | None:
    """Why the DSN's address alone says transaction pooler (Supabase's port 6543), or None."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return None
    host, port = str(params.get("host") or ""), str(params.get("port") or "5432")
    if host.endswith(SUPABASE_POOLER_DOMAIN) and port == SUPABASE_TRANSACTION_PORT:
        return f"{host}:{port} is Supabase's transaction-mode pooler"
    return None


def transaction_pooler_evidence(conn: psycopg.Connection, dsn: str) -> str | None:
    """What shows that conn (autocommit, opened on dsn) goes through a transaction-mode
    pooler, or None for a session of its own (direct, or a session pooler). Sets nothing on
    the server; opens one more connection on dsn for the length of a transaction."""
    from rollout import db  # db.connect calls this module: imported when used

    by_address = known_transaction_pooler(dsn)
    if by_address:
        return by_address
    ours = server_session(conn)
    # No application_name at startup: a pooler would leave it on the server connection.
    with (
        db.connect(dsn, application_name="", prepare_threshold=None) as other,
        other.transaction(),
    ):
        theirs = server_session(other)
        if theirs == ours:
            return f"another client was handed this connection's server session (pid {ours[0]})"
        again = server_session(conn)
    if again != ours:
        return (
            f"this connection's statements ran on server session pid {ours[0]}, then on pid "
            f"{again[0]}"
        )
    return None


def require_session(conn: psycopg.Connection, dsn: str, redacted: str) -> None:
    """TransactionPoolerRefused, saying what to use instead, when conn goes through a
    transaction-mode pooler; nothing was set or changed on the server either way."""
    evidence = transaction_pooler_evidence(conn, dsn)
    if evidence:
        raise TransactionPoolerRefused(
            f"{redacted} goes through a transaction-mode pooler ({evidence}): a rollout's "
            "lock, settings and online apply need a session of their own, and there they would "
            "stay on a server connection the application then uses. Nothing was set or changed. "
            "Use the direct connection or the session pooler, port 5432 (Supabase: the direct "
            "or session-mode connection string, not port 6543)"
        )

"""Whether a connection reaches a session of its own, or a transaction-mode pooler.

Through a transaction-mode pooler (PgBouncer `pool_mode = transaction`, Supabase's port 6543)
each transaction may run on another server connection, shared with other clients: whatever a
session sets (an advisory lock, `application_name`, a `SET`) stays on a server connection the
application then uses, and nothing that spans transactions holds. The rollout's steps need a
session (their lock spans several transactions; the online apply spans minutes), so they
refuse such a connection before setting or changing anything (`db.connect(session_only=True)`).

How it is told, since a quiet pooler hands one client the same server connection every time
(`pg_backend_pid()` alone proves nothing): the connection runs a statement of its own (a token
in its text) and notes the server session that answered (pid and start); a second client then
holds a transaction open, looks at that server session, and the first asks again. A pooler that
shares server connections shows it one of three ways: the second client is handed the first
one's server session (PgBouncer's default on a quiet pool: the connection released last goes
out first); that session has run another client's statement since (a busy pool); or the first
connection, asking again, is answered by another session (and so for the second client across
its transactions). This is done in a few rounds. A direct connection or a session pooler never
does any of these. Limit: a quiet pool that hands its idle connections out in
another order, where nobody else happens to use the session in between, can pass as a session;
Supabase's transaction port is caught by its address anyway.
"""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from rollout.errors import RolloutError
from rollout.paths import SQL_DIR, sql_text

SERVER_SESSION_SQL = SQL_DIR / "pooler" / "server_session.sql"
LAST_STATEMENT_SQL = SQL_DIR / "pooler" / "last_statement.sql"
# Supabase's transaction-mode pooler (Supavisor or its PgBouncer): this port on these hosts.
SUPABASE_POOLER_DOMAIN = ".pooler.supabase.com"
SUPABASE_TRANSACTION_PORT = "6543"
# Each round gives a busy pool one more chance to show itself; on a session it costs a few
# statements.
CHECK_ROUNDS = 3


class TransactionPoolerRefused(RolloutError):
    """The DSN leads to a transaction-mode pooler, where a step's session state would leak."""


def server_session(conn: psycopg.Connection, token: str = "") -> tuple:
    """(pid, backend_start) of the server session that answers on conn now."""
    query = sql.SQL(sql_text(SERVER_SESSION_SQL)).format(token=sql.Literal(token))
    pid, started, _token = conn.execute(query).fetchone()
    return pid, started


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
    # No application_name at startup: a pooler would leave it on the server connection.
    with db.connect(dsn, application_name="", prepare_threshold=None) as other:
        seen: dict[str, set] = {"this connection": set(), "the other client": set()}
        for _ in range(CHECK_ROUNDS):
            evidence = _one_round(conn, other, seen)
            if evidence:
                return evidence
            for who, sessions in seen.items():
                if len(sessions) > 1:  # a session never changes its server process
                    pids = ", ".join(str(pid) for pid, _ in sessions)
                    return f"{who}'s statements ran on several server sessions (pids {pids})"
    return None


def _one_round(conn: psycopg.Connection, other: psycopg.Connection, seen: dict) -> str | None:
    token = f"rollout-session-check {uuid.uuid4().hex}"
    ours = server_session(conn, token)
    seen["this connection"].add(ours)
    with other.transaction():
        theirs = server_session(other)
        seen["the other client"].add(theirs)
        if theirs == ours:
            return f"another client was handed this connection's server session (pid {ours[0]})"
        row = other.execute(
            sql_text(LAST_STATEMENT_SQL).encode(), {"pid": ours[0], "started": ours[1]}
        ).fetchone()
        last = (row[0] if row else None) or ""
        if last and token not in last and not last.startswith("<"):  # "<insufficient privilege>"
            return (
                f"this connection's server session (pid {ours[0]}) ran another client's "
                "statement while this connection was idle"
            )
        seen["this connection"].add(server_session(conn))  # while the other holds its own
    return None


def require_session(conn: psycopg.Connection, dsn: str, redacted: str) -> None:
    """TransactionPoolerRefused, saying what to use instead, when conn goes through a
    transaction-mode pooler; nothing was set or changed on the server either way."""
    evidence = transaction_pooler_evidence(conn, dsn)
    if evidence:
        raise TransactionPoolerRefused(
            f"{redacted} goes through a transaction-mode pooler ({evidence}), where the "
            "rollout's lock and session settings would stay on a server connection the "
            "application then uses. Nothing was set or changed. Use the direct connection or "
            "the session pooler, port 5432 (Supabase: not port 6543)"
        )

"""Secrets never reach an artifact: every password this process connects with is remembered,
and the one artifact writer (rollout.artifacts) scrubs them from whatever it writes. Tools that
print what they were given (pytest's tracebacks, Great Expectations' reports) get passwords
through the environment or connection arguments, not in a DSN, and are scrubbed on top of it.
Airflow masks the connections' passwords in task logs itself."""

from __future__ import annotations

import contextlib
import threading

from psycopg.conninfo import make_conninfo

from rollout.dsn import SECRET_PARAMS, parse_dsn

MASK = "***"
# Shorter values are too likely to occur by chance in text; a password that short is a
# problem of its own.
MIN_LENGTH = 4
_known: set[str] = set()
_lock = threading.Lock()


def remember(secret: str | None) -> None:
    if secret and len(secret) >= MIN_LENGTH:
        with _lock:
            _known.add(secret)


def remember_dsn(dsn: str) -> None:
    """Remember the DSN's password and client key path (and its passphrase), if it has them:
    where a key lies is nobody's business but the connection's."""
    with contextlib.suppress(Exception):  # an unparsable DSN fails where it is used
        params = parse_dsn(dsn)
        for name in SECRET_PARAMS:
            remember(params.get(name))


def split_password(dsn: str) -> tuple[str, str | None]:
    """(the DSN without its password, the password): for a child process, which gets the
    password in its environment (PGPASSWORD) where no traceback prints it."""
    params = parse_dsn(dsn)
    password = params.pop("password", None)
    remember_dsn(dsn)
    return make_conninfo(**params), password


def scrub(data: bytes) -> bytes:
    with _lock:
        known = sorted(_known, key=len, reverse=True)  # a longer secret first
    for secret in known:
        data = data.replace(secret.encode(), MASK.encode())
    return data


def scrub_text(text: str) -> str:
    return scrub(text.encode()).decode("utf-8", "replace")

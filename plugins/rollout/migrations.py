"""Migration bundles: ``sql/migrations/<version>_<name>/`` with up.sql, down.sql and checks/.

Each script is one transaction written as ``BEGIN; … COMMIT;`` so it is safe however it is
applied (``psql -f`` included). The runner executes the body between them inside its own
transaction, so that later steps (the ledger row) can join the same transaction.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from rollout.db import require_no_transaction, run_sql_file
from rollout.errors import BundleError, RollbackRefused
from rollout.paths import MIGRATIONS_DIR, sql_text

_BUNDLE_DIR = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)$")
_WRAPPED = re.compile(r"^\s*BEGIN;\s*$(?P<body>.*)^\s*COMMIT;\s*\Z", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class MigrationBundle:
    version: str
    name: str
    path: Path

    @property
    def up_path(self) -> Path:
        return self.path / "up.sql"

    @property
    def down_path(self) -> Path:
        return self.path / "down.sql"

    def check_path(self, name: str) -> Path:
        return self.path / "checks" / f"{name}.sql"

    @cached_property
    def checksum(self) -> str:
        """sha256 over every file of the bundle (path and content), in name order."""
        digest = hashlib.sha256()
        for file in sorted(p for p in self.path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(self.path).as_posix().encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
        return digest.hexdigest()

    def body(self, direction: str) -> str:
        """The statements of up.sql or down.sql without their BEGIN/COMMIT wrapper."""
        path = {"up": self.up_path, "down": self.down_path}[direction]
        match = _WRAPPED.match(_strip_leading_comments(sql_text(path)))
        if not match:
            raise BundleError(
                f"{path} must be one transaction: its first statement `BEGIN;` and its last "
                "`COMMIT;`, each on a line of its own"
            )
        return match.group("body")


def _strip_leading_comments(text: str) -> str:
    lines = text.splitlines(keepends=True)
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    return "".join(lines)


def discover_bundles(directory: Path = MIGRATIONS_DIR) -> list[MigrationBundle]:
    """Every bundle folder, oldest version first."""
    bundles = []
    for path in sorted(p for p in directory.iterdir() if p.is_dir()):
        match = _BUNDLE_DIR.match(path.name)
        if not match:
            raise BundleError(f"{path.name}: bundle folders are named <14-digit version>_<name>")
        for required in ("up.sql", "down.sql"):
            if not (path / required).is_file():
                raise BundleError(f"bundle {path.name} has no {required}")
        bundles.append(MigrationBundle(match["version"], match["name"], path))
    return bundles


def load_bundle(version: str | None = None, directory: Path = MIGRATIONS_DIR) -> MigrationBundle:
    """The bundle of that version, or the newest when version is None."""
    bundles = discover_bundles(directory)
    if not bundles:
        raise BundleError(f"no migration bundles under {directory}")
    if version is None:
        return bundles[-1]
    for bundle in bundles:
        if bundle.version == version:
            return bundle
    known = ", ".join(b.version for b in bundles)
    raise BundleError(f"no migration bundle with version {version!r}; known: {known}")


# A script marks where its long lock begins with a line starting like this; from there to
# COMMIT is the lock phase that apply_* times (up.sql and down.sql both have one).
LOCK_PHASE_MARKER = "-- From here to COMMIT,"


@dataclass(frozen=True)
class ApplyResult:
    version: str
    direction: str
    seconds: float  # the whole transaction
    lock_seconds: float  # from the marked lock phase to COMMIT: what other sessions wait for


def split_lock_phase(body: str) -> tuple[str, str]:
    """(statements before the lock phase, the lock phase); all of it when there is no marker."""
    at = body.find(LOCK_PHASE_MARKER)
    return ("", body) if at < 0 else (body[:at], body[at:])


def _apply(
    conn: psycopg.Connection,
    bundle: MigrationBundle,
    direction: str,
    settings: dict[str, str] | None,
    before_commit: BeforeCommit | None,
) -> ApplyResult:
    require_no_transaction(conn, f"{direction} of {bundle.version}")
    before_lock, lock_phase = split_lock_phase(bundle.body(direction))
    started = time.perf_counter()
    with conn.transaction():
        for name, value in (settings or {}).items():
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        if before_lock.strip():
            conn.execute(before_lock.encode())
        lock_started = time.perf_counter()
        conn.execute(lock_phase.encode())
        if before_commit:
            now = time.perf_counter()
            before_commit(conn, now - started, now - lock_started)
    ended = time.perf_counter()  # after COMMIT: the lock is released
    return ApplyResult(bundle.version, direction, ended - started, ended - lock_started)


# Called inside the apply's transaction, after the lock phase, before COMMIT, with the seconds
# so far and the lock phase's seconds: the ledger row is written there, in the same transaction.
BeforeCommit = Callable[[psycopg.Connection, float, float], None]


def apply_up(
    conn: psycopg.Connection,
    bundle: MigrationBundle,
    *,
    settings: dict[str, str] | None = None,
    before_commit: BeforeCommit | None = None,
) -> ApplyResult:
    """Run up.sql's body in one transaction on conn; time it and its lock phase.

    `settings` are set for this transaction only (lock_timeout, statement_timeout)."""
    return _apply(conn, bundle, "up", settings, before_commit)


def apply_down(
    conn: psycopg.Connection,
    bundle: MigrationBundle,
    *,
    settings: dict[str, str] | None = None,
    before_commit: BeforeCommit | None = None,
) -> ApplyResult:
    """Run down.sql's body in one transaction; RollbackRefused when its own check refuses."""
    try:
        return _apply(conn, bundle, "down", settings, before_commit)
    except psycopg.Error as exc:
        if exc.sqlstate == RollbackRefused.sqlstate:
            diag = exc.diag
            raise RollbackRefused(
                f"{diag.message_primary}. {diag.message_hint or ''}".strip()
            ) from exc
        raise


def run_check(conn: psycopg.Connection, bundle: MigrationBundle, name: str) -> None:
    """Run checks/<name>.sql (verify_up, verify_down); it raises when the state is wrong."""
    with conn.transaction():
        run_sql_file(conn, bundle.check_path(name))


def list_down_conflicts(conn: psycopg.Connection, bundle: MigrationBundle) -> list[dict]:
    """The allocation pairs that make down.sql refuse (checks/down_conflicts.sql)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql_text(bundle.check_path("down_conflicts")).encode())
        return cur.fetchall()

"""`rollout migrate up|down` and `rollout lease` by hand: the same steps as the DAG (ledger,
lease, lock retries, row rules, exports), on real PostgreSQL, through the real command."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from rollout import db, ledger
from rollout.seed import seed_database
from tests.target_state import migrated, outcomes


@pytest.fixture
def target(make_database) -> str:
    dsn = make_database()
    with db.connect(dsn) as conn:
        seed_database(conn, 500, seed=4, anchor=dt.date(2026, 12, 1))
    return dsn


def rollout(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rollout", *args], capture_output=True, text=True, timeout=300
    )


def test_up_and_down_write_the_ledger_and_keep_the_exports(target, tmp_path):
    up = rollout("migrate", "up", "--dsn", target, "--out", str(tmp_path / "up"))
    assert up.returncode == 0, up.stderr
    assert "attempt 1/6, lock_timeout 500 ms" in up.stdout
    assert migrated(target) and outcomes(target) == ["applied"]
    with db.connect(target) as conn:
        [row] = ledger.history(conn)
        assert row["run_id"].startswith("cli__") and row["session"]["pid"] > 0
        assert ledger.lease_holder(conn) is None  # given back at the end

    down = rollout("migrate", "down", "--dsn", target, "--out", str(tmp_path / "down"))
    assert down.returncode == 0, down.stderr
    assert not migrated(target) and outcomes(target) == ["applied", "rolled_back"]
    assert (tmp_path / "down/target/rollback/booking_confirmation_results.csv").is_file()


def test_a_down_of_another_runs_apply_must_name_it(target, tmp_path):
    with db.connect(target) as conn:  # as a DAG run would have applied it
        ledger.ensure_ledger(conn)
    up = rollout("migrate", "up", "--dsn", target, "--out", str(tmp_path))
    assert up.returncode == 0, up.stderr
    with db.connect(target) as conn:
        conn.execute("UPDATE rollout.ledger SET run_id = 'manual__2026-11-29T01:00:00+00:00'")
    refused = rollout("migrate", "down", "--dsn", target, "--out", str(tmp_path))
    assert refused.returncode == 1
    assert "--applied-by manual__2026-11-29T01:00:00+00:00" in refused.stderr
    assert migrated(target)

    named = rollout(
        "migrate", "down", "--dsn", target, "--out", str(tmp_path),
        "--applied-by", "manual__2026-11-29T01:00:00+00:00",
    )  # fmt: skip
    assert named.returncode == 0, named.stderr
    assert not migrated(target)
    with db.connect(target) as conn:
        down = ledger.history(conn)[-1]
    assert "on behalf of run manual__2026-11-29T01:00:00+00:00" in down["detail"]


def test_the_cli_respects_a_runs_lease_and_releases_a_stale_one_by_name(target, tmp_path):
    with db.connect(target) as conn:
        ledger.take_lease(
            conn, run_id="manual__x", dag_id="migration_rollout", target="production", actor="a"
        )
    busy = rollout("migrate", "up", "--dsn", target, "--out", str(tmp_path))
    assert busy.returncode == 2 and "run manual__x of migration_rollout" in busy.stderr
    assert not migrated(target)

    shown = rollout("lease", "show", "--target", target)
    assert "held by run manual__x of migration_rollout" in shown.stdout
    wrong = rollout("lease", "release", "--target", target, "--run", "manual__y")
    assert wrong.returncode == 2 and "nothing released" in wrong.stderr
    released = rollout("lease", "release", "--target", target, "--run", "manual__x")
    assert released.returncode == 0
    assert "free" in rollout("lease", "show", "--target", target).stdout
    assert rollout("migrate", "up", "--dsn", target, "--out", str(tmp_path)).returncode == 0

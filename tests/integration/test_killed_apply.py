"""An apply whose process is killed (kill -9) while it holds the lock: the target is as before,
the attempt is written to the ledger by the step after it (which the dead process could not
do), the rollback says why there is nothing to undo, and the summary says it was killed."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import time

from rollout import db, steps
from rollout.errors import KILLED
from rollout.migrations import MigrationBundle, load_bundle
from rollout.report import write_report
from tests.target_state import ledger_rows, make_run, migrated, wait_until_gone


def sleeping_bundle(tmp_path) -> MigrationBundle:
    """The real bundle, its up holding the lock a minute before COMMIT."""
    real = load_bundle()
    folder = tmp_path / "bundles" / real.path.name
    shutil.copytree(real.path, folder)
    up = folder / "up.sql"
    head, _, tail = up.read_text().rpartition("COMMIT;")
    up.write_text(f"{head}SELECT pg_sleep(60);\nCOMMIT;{tail}")
    return MigrationBundle(real.version, real.name, folder)


def wait_for_sleeping_apply(dsn: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    with db.connect(dsn) as conn:
        while time.monotonic() < deadline:
            if conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'rollout-apply%%'"
                " AND wait_event = 'PgSleep' AND datname = current_database()"
            ).fetchone()[0]:
                return
            time.sleep(0.2)
    raise AssertionError("the apply never reached its sleep")


def test_a_killed_apply_is_recorded_and_named_killed_not_rolled_back(targets, tmp_path):
    run, _ = make_run(targets, tmp_path, "run_killed", bundle=sleeping_bundle(tmp_path))
    steps.preflight(run)
    child = multiprocessing.get_context("fork").Process(
        target=steps.apply_target, args=(run, "production")
    )
    child.start()
    try:
        wait_for_sleeping_apply(targets["production"])
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    finally:
        if child.is_alive():
            child.kill()
    with db.connect(targets["production"]) as conn:
        assert wait_until_gone(conn, "rollout-apply%"), "the killed apply's session lives on"
    assert not migrated(targets["production"])
    assert ledger_rows(targets["production"]) == []  # the dead process wrote nothing

    why = steps.record_killed_apply(run, "production")
    assert why is not None and "killed before it committed" in why
    assert "rolled back at" not in why  # not a note about some other run's rollback
    [row] = ledger_rows(targets["production"])
    assert (row["direction"], row["outcome"], row["run_id"]) == ("up", "failed", "run_killed")
    assert row["detail"].startswith("killed: the apply's task process died")
    assert steps.record_killed_apply(run, "production") is not None  # once only
    assert len(ledger_rows(targets["production"])) == 1
    assert not migrated(targets["production"])

    summary = write_report(run, {"preflight": "success", "apply_production": "failed"}, {})
    text = (tmp_path / "run_killed" / "summary.md").read_text()
    assert f"| apply_production | failed | {KILLED} |" in text
    assert summary["targets"]["production"] == "not applied"

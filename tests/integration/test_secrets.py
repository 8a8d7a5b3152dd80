"""No password or client key path reaches an artifact, whatever the steps print: every DSN here
carries a sentinel password (the test servers trust local connections and ignore it) and a
sentinel sslkey path, the steps run and fail, and every file they wrote is searched for both."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from rollout import db, report, steps
from rollout.artifacts import ArtifactDir
from rollout.run import TARGETS, Run
from rollout.seed import seed_database
from rollout.settings import RolloutSettings
from tests.factories import freeze_new_restaurants

SENTINEL = f"s3ntinel-{uuid.uuid4().hex[:12]}"
# Where a client key lies is a secret too (TLS, tests/integration/test_tls.py): a path no file
# is at (libpq reads the key only with a client certificate, and there is none here).
KEY_PATH = f"/nonexistent/k3y-{uuid.uuid4().hex[:12]}/client.key"


def with_sentinel(dsn: str) -> str:
    return make_conninfo(**{**conninfo_to_dict(dsn), "password": SENTINEL, "sslkey": KEY_PATH})


def test_no_artifact_holds_a_password(make_database, tmp_path):
    dsns = {}
    for name in TARGETS:
        plain = make_database()
        with db.connect(plain) as conn:
            seed_database(conn, 500, seed=8, anchor=dt.date(2026, 12, 1))
        dsns[name] = with_sentinel(plain)
    run = Run(
        settings=RolloutSettings.from_params(
            {"approvers": ["reviewer"], "lock_timeout_ms": 50, "lock_retries": 0}
        ),
        dsns=dsns,
        artifacts=ArtifactDir(tmp_path / "artifacts"),
        run_id="run_secrets",
        progress=lambda _m: None,
    )
    steps.preflight(run)
    steps.apply_target(run, "staging")
    steps.validate(run, "staging")  # Great Expectations connects with it too
    steps.capture_db_diff(run)
    with db.connect(dsns["staging"]) as conn:  # the application's tests now fail, printing
        freeze_new_restaurants(conn)
    with pytest.raises(steps.StepFailed, match="assignment tests"):
        steps.run_assignment_tests(run)
    with db.connect(dsns["production"], autocommit=False) as holder:
        holder.execute("LOCK TABLE public.allocations IN ACCESS SHARE MODE")
        with pytest.raises(steps.StepFailed, match="not granted"):
            steps.apply_target(run, "production")
        holder.rollback()
    with pytest.raises(steps.StepFailed, match="schema is not what it was before"):
        steps.rollback_target(run, "staging")  # the planted trigger is still there
    report.write_report(run, {"preflight": "success"}, {})

    written = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    output = (tmp_path / "artifacts/staging/assignment/assignment-output.txt").read_text()
    assert "restaurants are frozen" in output  # the failing tests did print their story
    assert len(written) > 20
    leaks = [str(p) for p in written for secret in (SENTINEL, KEY_PATH)
             if secret.encode() in p.read_bytes()]  # fmt: skip
    assert not leaks, leaks

"""A malformed connection string anywhere is one line naming where it was given (a flag, an
Airflow connection's variable, ROLLOUT_<NAME>_DSN), never a traceback or the password."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rollout import db
from rollout.cli import main
from rollout.demo import target_dsn_from_env
from rollout.dsn import MalformedDsn
from rollout.paths import PROJECT_ROOT

# The issue's own: a space where '&' belongs, in a URI's query.
ISSUE_DSN = "postgresql://postgres@127.0.0.1:5432/postgres?host=/tmp dbname=booking"


def test_the_cli_says_one_line_naming_the_flag_and_exits_2():
    completed = subprocess.run(
        [sys.executable, "-m", "rollout", "status", "--target", ISSUE_DSN],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.startswith("rollout:")]
    assert len(lines) == 1 and lines[0].startswith("rollout: --target: not a PostgreSQL")
    assert 'URI query parameter: "host"' in lines[0]  # libpq's reason, which part is wrong


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["seed", "--dsn", "host=db port", "--allocations", "1"], "--dsn"),
        (["migrate", "verify", "--dsn", "dbname=x bogus=1"], "--dsn"),
        (["probes", "baseline", "--dsn", "postgresql://h/db?sslmode", "--out", "x"], "--dsn"),
        (["diff", "--before", "host=h dbname", "--after", "host=h", "--out", "x"], "--before"),
        (["lease", "show", "--target", "postgresql://h/db?x=1"], "--target"),
    ],
)
def test_every_dsn_flag_is_named(argv, flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written anywhere (an --out folder)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rollout: {flag}: not a PostgreSQL connection string")
    assert "\n" not in err and list(tmp_path.iterdir()) == []


def test_a_password_in_a_malformed_dsn_is_not_repeated(capsys):
    assert main(["seed", "--dsn", "host=db password=s3cret s3cond", "--allocations", "1"]) == 2
    err = capsys.readouterr().err
    assert "s3c" not in err and 'missing "=" after' in err


def test_an_airflow_connection_variable_is_named(capsys, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_BOOKING_PROD", "postgresql://u:pw-xyz@db:notaport/booking")
    assert main(["status", "--target", "booking_prod"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rollout: AIRFLOW_CONN_BOOKING_PROD: not a connection URI")
    assert "pw-xyz" not in err and "\n" not in err


def test_a_target_from_the_environment_is_named(monkeypatch):
    monkeypatch.setenv("ROLLOUT_STAGING_DSN", "host=db dbname")
    with pytest.raises(MalformedDsn, match=r"^ROLLOUT_STAGING_DSN: not a PostgreSQL"):
        target_dsn_from_env("staging")
    monkeypatch.setenv("ROLLOUT_STAGING_DSN", "host=db dbname=booking")
    assert target_dsn_from_env("staging") == "host=db dbname=booking"


def test_db_connect_refuses_in_one_line_before_reaching_for_a_server():
    with pytest.raises(MalformedDsn, match=r"^the DSN: not a PostgreSQL .*\"bogus\""):
        db.connect("host=127.0.0.1 bogus=1")
    with pytest.raises(MalformedDsn):
        db.with_database("host=h port", "other")


def test_redact_masks_the_password_and_the_client_key_path():
    shown = db.redact("host=h dbname=d password=pw sslkey=/secret/client.key sslmode=verify-full")
    assert "pw" not in shown.replace("password", "") and "/secret" not in shown
    assert "sslmode=verify-full" in shown


def test_the_dags_connection_resolution_names_an_unreadable_variable(monkeypatch):
    from rollout.airflow_run import MissingTarget, dsn_or_why_not

    monkeypatch.setenv("AIRFLOW_CONN_BOOKING_BAD", "postgresql://u:pw-xyz@db:notaport/booking")
    why = dsn_or_why_not("booking_bad")  # the first step that connects fails with this
    assert isinstance(why, MissingTarget)
    assert why.startswith("AIRFLOW_CONN_BOOKING_BAD: Airflow cannot read it")
    assert "pw-xyz" not in why and "\n" not in why
    monkeypatch.setenv("AIRFLOW_CONN_BOOKING_BAD", "postgresql://u:pw-xyz@db:5432/booking")
    assert (
        dsn_or_why_not("booking_bad") == "host=db port=5432 user=u password=pw-xyz dbname=booking"
    )


def test_a_malformed_rollout_test_dsn_stops_the_test_run_in_one_line():
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/unit/test_window.py", "-q", "-p", "no:cacheprovider"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ROLLOUT_TEST_DSN": "postgresql://h/db?sslmode"},
    )  # fmt: skip
    assert completed.returncode == pytest.ExitCode.USAGE_ERROR
    output = completed.stdout + completed.stderr
    assert "Traceback" not in output
    assert "ERROR: ROLLOUT_TEST_DSN: not a PostgreSQL connection string" in output

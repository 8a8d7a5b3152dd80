"""A production reached over TLS keeps its TLS parameters on every way a DSN travels: into an
Airflow connection (the local stack's AIRFLOW_CONN_<ID>) and back out of it, as the DAG's and
the CLI's connection resolution read it; and shown anywhere, its secrets are masked."""

from __future__ import annotations

from rollout import db
from rollout.airflow_stack import connection_json
from rollout.dsn import parse_dsn
from rollout.status import target_dsn

TLS_DSN = (
    "host=db.example port=5432 user=migrator password=pw-xyz-long dbname=booking "
    "sslmode=verify-full sslrootcert=/etc/rollout/ca.crt sslcert=/etc/rollout/client.crt "
    "sslkey=/etc/rollout/private/client.key"
)


def test_an_airflow_connection_keeps_the_tls_parameters(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PROD_TLS", connection_json(TLS_DSN))
    assert parse_dsn(target_dsn("prod_tls")) == parse_dsn(TLS_DSN)


def test_a_shown_dsn_keeps_the_tls_mode_and_masks_the_secrets():
    shown = db.redact(TLS_DSN)
    assert "pw-xyz-long" not in shown and "/etc/rollout/private" not in shown
    assert parse_dsn(shown)["sslmode"] == "verify-full"
    assert parse_dsn(shown)["sslrootcert"] == "/etc/rollout/ca.crt"  # not a secret: kept

"""Passwords never reach an artifact: the one writer scrubs every password this process
connected with, and child processes get theirs in the environment, not in a DSN."""

from __future__ import annotations

from rollout import secrets
from rollout.artifacts import ArtifactDir


def test_the_artifact_writer_scrubs_every_known_password(tmp_path):
    secrets.remember_dsn("host=db.example user=rollout password=s3ntinel-xyz dbname=booking")
    out = ArtifactDir(tmp_path)
    out.write_text("failures/apply.txt", "connect to password=s3ntinel-xyz failed")
    out.subdir("staging/assignment").write_bytes("out.txt", b"dsn = 's3ntinel-xyz'")
    assert (tmp_path / "failures/apply.txt").read_text() == "connect to password=*** failed"
    assert (tmp_path / "staging/assignment/out.txt").read_bytes() == b"dsn = '***'"


def test_a_child_gets_the_dsn_without_its_password():
    bare, password = secrets.split_password("host=/tmp user=u password=pw-long-enough dbname=d")
    assert password == "pw-long-enough" and "password" not in bare and "dbname=d" in bare
    assert secrets.scrub_text("pw-long-enough") == "***"
    bare, password = secrets.split_password("host=/tmp dbname=d")
    assert password is None and sorted(bare.split()) == ["dbname=d", "host=/tmp"]

"""The embedded PostgreSQL harness: named clusters that start, answer, persist and stop,
as root and as a normal user."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from rollout import db
from rollout.clusters import cluster_dsn, start_cluster, stop_cluster
from rollout.errors import TargetUnavailable


def test_named_clusters_start_answer_and_stop(tmp_path):
    staging, production = start_cluster("staging", tmp_path), start_cluster("production", tmp_path)
    try:
        assert staging.dsn != production.dsn
        for cluster in (staging, production):
            with db.connect(cluster.dsn) as conn:
                assert db.server_version(conn) == 18
                names = {n for (n,) in conn.execute("SELECT name FROM pg_available_extensions")}
                assert {"btree_gist", "pg_stat_statements"} <= names
                assert conn.execute("SHOW shared_preload_libraries").fetchone() == (
                    "pg_stat_statements",
                )
        assert cluster_dsn("staging", tmp_path) == staging.dsn
    finally:
        assert stop_cluster("staging", tmp_path) is True
        stop_cluster("production", tmp_path, delete=True)
    assert cluster_dsn("staging", tmp_path) is None
    with pytest.raises(TargetUnavailable, match="cannot connect"):
        db.connect(staging.dsn)
    # A stopped cluster starts again with its data.
    again = start_cluster("staging", tmp_path)
    stop_cluster("staging", tmp_path, delete=True)
    assert again.dsn == staging.dsn


def test_a_cluster_outlives_the_process_that_started_it(tmp_path):
    code = f"from rollout.clusters import start_cluster; print(start_cluster('kept', {str(tmp_path)!r}).dsn)"
    dsn = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        with db.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stop_cluster("kept", tmp_path, delete=True)


def _normal_user() -> pwd.struct_passwd:
    name = "rollout_tester"
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)
        return pwd.getpwnam(name)


def _interpreter_for(user: pwd.struct_passwd) -> str:
    """A Python of this version that `user` may run: ours, or the system's (a venv whose base
    interpreter sits under /root is closed to other users)."""
    candidates = [sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"]
    for candidate in candidates:
        try:
            probe = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"],
                user=user.pw_uid,
                group=user.pw_gid,
                extra_groups=[],
                capture_output=True,
                text=True,
            )
        except OSError:  # not executable by that user
            continue
        if probe.returncode == 0 and probe.stdout.strip() == str(tuple(sys.version_info[:2])):
            return candidate
    pytest.fail(
        f"no Python {sys.version_info[0]}.{sys.version_info[1]} that a normal user can run: "
        "install python3 from the system's packages"
    )


def test_works_as_a_normal_user(tmp_path):
    """The harness run by an unprivileged user (as root: a system user made for the test)."""
    script = textwrap.dedent(
        """
        import os, sys
        from rollout.clusters import start_cluster, stop_cluster
        from rollout.db import connect
        cluster = start_cluster("user", sys.argv[1])
        with connect(cluster.dsn) as conn:
            who = conn.execute("SELECT current_user").fetchone()[0]
        stop_cluster("user", sys.argv[1], delete=True)
        print(os.geteuid(), who)
        """
    )
    if os.geteuid() != 0:
        out = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert out.split() == [str(os.geteuid()), "postgres"]
        return

    user = _normal_user()
    work = Path(tempfile.mkdtemp(prefix="rollout-normal-user-"))  # pytest's tmp is root-only
    os.chown(work, user.pw_uid, user.pw_gid)
    import rollout

    paths = [p for p in sys.path if p.endswith("site-packages")] + [
        str(Path(rollout.__file__).parents[1])
    ]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),
        "XDG_RUNTIME_DIR": str(work),
        "PYTHONPATH": os.pathsep.join(paths),
        "ROLLOUT_STATE_DIR": str(work),
    }
    try:
        result = subprocess.run(
            [_interpreter_for(user), "-c", script, str(work)],
            env=env,
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(user.pw_uid), "postgres"]

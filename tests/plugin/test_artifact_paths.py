"""Where a run's artifacts go: one folder per run, two levels under the artifacts root, whatever
ids Airflow accepts (issue 16 points 1 and 9)."""

from __future__ import annotations

import pytest

from rollout.airflow_paths import run_artifacts, run_page_path, safe_dag_id, safe_run_id


@pytest.mark.parametrize(
    ("run_id", "folder"),
    [
        ("manual__2026-11-29T10:00:00+00:00", "manual__2026-11-29T10_00_00_00_00"),
        ("scheduled__2026-11-29T00:00:00+00:00", "scheduled__2026-11-29T00_00_00_00_00"),
        ("..", "_."),
        (".", "_"),
        ("...", "_.."),
        (".hidden", "_hidden"),
        ("", "_"),
        ("a/../../b", "a_.._.._b"),
    ],
)
def test_a_run_id_is_one_folder_never_dot_or_dot_dot(run_id, folder):
    assert safe_run_id(run_id) == folder
    assert folder not in (".", "..") and not folder.startswith(".") and "/" not in folder


@pytest.mark.parametrize("dag_id", ["..", ".", ".hidden", "a/b", "a..b", "", "-x"])
def test_a_dag_id_that_could_name_another_folder_is_refused(dag_id):
    with pytest.raises(ValueError, match="cannot name a folder of artifacts"):
        safe_dag_id(dag_id)
    with pytest.raises(ValueError):
        run_artifacts(dag_id, "manual__x")


def test_a_runs_folder_is_two_levels_under_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLLOUT_ARTIFACTS_URL", f"file://{tmp_path}")
    for run_id in ("..", ".", "manual__2026-11-29T10:00:00+00:00"):
        folder = run_artifacts("fleet_rollout", run_id)
        assert folder.path == f"{tmp_path}/fleet_rollout/{safe_run_id(run_id)}"


def test_the_page_path_keeps_airflows_run_ids_readable_and_escapes_the_rest():
    run = "manual__2026-11-29T10:00:00+00:00"
    assert run_page_path("fleet_rollout", run) == f"/rollout/runs/fleet_rollout/{run}/"
    assert run_page_path("d", "a/b?c#d") == "/rollout/runs/d/a%2Fb%3Fc%23d/"

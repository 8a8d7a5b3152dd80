"""`rollout bundle check` and `rollout bundle import`: a bundle says what it lacks, as what to
fix; a Supabase migration file becomes a scaffold that is refused until its author finished it."""

from __future__ import annotations

import shutil

import pytest

from rollout.authoring import check_bundle, import_supabase
from rollout.errors import RolloutError
from rollout.migrations import MigrationBundle, load_bundle
from rollout.paths import PROJECT_ROOT
from rollout.settings import RolloutSettings, SettingsError

FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "bundles"


def test_the_real_bundle_and_the_fixtures_are_ready():
    assert check_bundle(load_bundle("20251113203000")) == []
    for folder in FIXTURES.iterdir():
        assert check_bundle(MigrationBundle(folder.name[:14], folder.name[15:], folder)) == []


def test_a_broken_bundle_is_told_what_to_fix(tmp_path):
    source = FIXTURES / "20251120000000_booking_notes"
    folder = tmp_path / source.name
    shutil.copytree(source, folder)
    (folder / "checks" / "verify_down.sql").unlink()
    (folder / "down.sql").write_text("DROP TABLE x;\n")  # no transaction
    up = folder / "up.sql"
    up.write_text(up.read_text().replace("-- From here to COMMIT,", "--"))
    problems = check_bundle(MigrationBundle("20251120000000", "booking_notes", folder))
    assert any("down.sql must be one transaction" in p for p in problems)
    assert any("write checks/verify_down.sql" in p for p in problems)
    assert any("up.sql: put a line starting `-- From here to COMMIT,`" in p for p in problems)


def supabase_file(tmp_path, wrapped: bool = False):
    folder = tmp_path / "supabase" / "migrations"
    folder.mkdir(parents=True)
    path = folder / "20260101120000_add_guest_notes.sql"
    body = "-- notes for the guests\nALTER TABLE public.bookings ADD COLUMN guest_notes text;\n"
    path.write_text(f"BEGIN;\n{body}COMMIT;\n" if wrapped else body)
    return path


def test_a_supabase_file_becomes_a_scaffold_refused_until_finished(tmp_path, monkeypatch):
    source = supabase_file(tmp_path)
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    bundle = import_supabase(source, bundles)
    assert bundle.path.name == "20260101120000_add_guest_notes"
    assert (bundle.path / "supabase.sql").read_text() == source.read_text()  # kept as written
    up = (bundle.path / "up.sql").read_text()
    assert up.splitlines()[-1] == "COMMIT;" and "\nBEGIN;\n" in up and source.read_text() in up
    assert bundle.manifest.supabase.version == "20260101120000"
    assert bundle.manifest.supabase.name == "add_guest_notes"
    problems = check_bundle(bundle)
    for what in ("down.sql", "checks/verify_up.sql", "checks/verify_down.sql", "manifest.toml"):
        assert any(p.startswith(f"finish {what}:") for p in problems), (what, problems)

    # A run of it is refused, naming what to finish.
    monkeypatch.setattr("rollout.migrations.MIGRATIONS_DIR", bundles)
    with pytest.raises(
        SettingsError, match=r"version: the bundle 20260101120000_add_guest_notes is not ready"
    ):
        RolloutSettings.from_params({"version": "20260101120000"})
    with pytest.raises(RolloutError, match="exists already"):
        import_supabase(source, bundles)


def test_a_file_already_in_one_transaction_is_taken_as_written(tmp_path):
    source = supabase_file(tmp_path, wrapped=True)
    bundle = import_supabase(source, tmp_path)
    assert (bundle.path / "up.sql").read_text() == source.read_text()


def test_not_a_supabase_file_is_refused(tmp_path):
    wrong = tmp_path / "add_notes.sql"
    wrong.write_text("SELECT 1;")
    with pytest.raises(RolloutError, match="not a Supabase migration file"):
        import_supabase(wrong, tmp_path)

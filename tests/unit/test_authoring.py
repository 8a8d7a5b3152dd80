"""`rollout bundle check` and `rollout bundle import`: a bundle says what it lacks, as what to
fix; a Supabase migration file becomes a scaffold that is refused until its author finished it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rollout import cli
from rollout.authoring import check_bundle, import_supabase
from rollout.errors import RolloutError
from rollout.migrations import MigrationBundle, load_bundle
from rollout.paths import PROJECT_ROOT
from rollout.settings import RolloutSettings, SettingsError
from rollout.validation import run_suite

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


@pytest.fixture
def notes_bundle(tmp_path) -> MigrationBundle:
    """A copy of the booking-notes fixture bundle, its suites to be edited by the test."""
    folder = tmp_path / "bundles" / "20251120000000_booking_notes"
    shutil.copytree(FIXTURES / folder.name, folder)
    return MigrationBundle("20251120000000", "booking_notes", folder)


def write_suite(bundle: MigrationBundle, parameters: list[str], *entries: dict) -> Path:
    path = bundle.expectations_dir / "post_migration.json"
    suite = json.loads(path.read_text())
    suite["parameters"] = parameters
    suite["tables"]["bookings"] += list(entries)
    path.write_text(json.dumps(suite))
    return path


ROW_COUNT = {  # the previous convention: counts taken before the apply, given as parameters
    "type": "expect_table_row_count_to_equal",
    "kwargs": {"value": {"$PARAMETER": "row_count_bookings"}},
}


def test_a_suite_asking_for_row_counts_is_not_ready_and_a_run_is_refused(
    notes_bundle, monkeypatch, capsys
):
    """Issue 23: such a suite passed the check, then failed validate_staging after staging was
    changed. Now the check names it and what a run supplies, the run's parameters are refused
    before anything is touched, and the validation itself fails the same way."""
    path = write_suite(notes_bundle, ["row_count_bookings"], ROW_COUNT)
    [problem] = check_bundle(notes_bundle)
    assert problem.endswith(
        "post_migration.json asks for parameters a run never supplies: row_count_bookings "
        "(a run supplies: none; exact row counts are the runner's own, added where nobody "
        "writes: remove them from the suite)"
    )

    assert cli.main(["bundle", "check", str(notes_bundle.path)]) == 1
    assert "row_count_bookings" in capsys.readouterr().out

    monkeypatch.setattr("rollout.migrations.MIGRATIONS_DIR", notes_bundle.path.parent)
    with pytest.raises(SettingsError, match="row_count_bookings"):
        RolloutSettings.from_params({"version": "20251120000000"})
    # What the run met: the suite refused before any query (no database is reached here).
    with pytest.raises(RolloutError, match=r"row_count_bookings \(given: none;"):
        run_suite("host=/nonexistent dbname=none", path, notes_bundle.path / "out")


def test_a_parameter_named_only_in_an_expectation_is_found_too(notes_bundle):
    write_suite(notes_bundle, [], ROW_COUNT)
    [problem] = check_bundle(notes_bundle)
    assert "asks for parameters a run never supplies: row_count_bookings" in problem


def test_suite_entries_gx_refuses_and_files_that_are_missing_are_named(notes_bundle):
    write_suite(
        notes_bundle, [],
        {"type": "expect_table_to_be_tidy", "kwargs": {}},
        {"type": "expect_table_row_count_to_equal", "kwargs": {"valeu": 3}},
    )  # fmt: skip
    (notes_bundle.expectations_dir / "pre_migration.json").write_text(
        json.dumps({"suite": "pre_migration", "tables": {"bookings": [
            {"type": "unexpected_rows_expectation",
             "kwargs": {"unexpected_rows_query": {"$file": "sql/gone.sql"}}}]}})
    )  # fmt: skip
    (notes_bundle.expectations_dir / "catalog_post_migration.json").write_text("[1, 2]")
    problems = check_bundle(notes_bundle)
    assert len(problems) == 4, problems
    tidy, typo, missing_file, catalog = problems
    assert (
        "post_migration.json: bookings expectation 2 (expect_table_to_be_tidy) is refused" in tidy
    )
    assert "expectation 3 (expect_table_row_count_to_equal) is refused by GX" in typo
    assert "valeu" in typo
    assert "pre_migration.json does not load (FileNotFoundError" in missing_file
    assert "gone.sql" in missing_file
    assert "catalog_post_migration.json is not a JSON object of catalog checks" in catalog

"""Supabase's own history kept in step: this migration, written as Supabase's CLI keeps it
(one file in supabase/migrations, no transaction wrapper, no down), imported as a bundle and
completed; on a target with the CLI's history table the apply writes the row exactly as `supabase
db push` would (in the apply's transaction), the rollback deletes it, and `rollout status`
names a planted disagreement."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil

from rollout import db, steps, supabase
from rollout.artifacts import ArtifactDir
from rollout.authoring import check_bundle, import_supabase
from rollout.migrations import MigrationBundle, load_bundle
from rollout.run import Run
from rollout.seed import seed_database
from rollout.settings import RolloutSettings
from rollout.status import read_status, render_table
from tests.target_state import migrated

VERSION = "20251113203000"


def completed_import(tmp_path):
    """The file as Supabase keeps it, imported, then finished as its author would: our down,
    checks and manifest answers."""
    ours = load_bundle(VERSION)
    migrations = tmp_path / "supabase" / "migrations"
    migrations.mkdir(parents=True)
    source = migrations / f"{VERSION}_capacity_overlap_and_confirm_cache.sql"
    source.write_text(ours.body("up").strip() + "\n")
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    bundle = import_supabase(source, bundles)
    assert check_bundle(bundle)  # a scaffold: not ready yet
    shutil.copy(ours.down_path, bundle.down_path)
    for check in ("verify_up", "verify_down", "down_conflicts", "preflight_on_conflict_arbiters"):
        shutil.copy(ours.check_path(check), bundle.check_path(check))
    manifest = (ours.path / "manifest.toml").read_text()
    (bundle.path / "manifest.toml").write_text(
        manifest + f'\n[supabase]\nversion = "{VERSION}"\n'
        'name = "capacity_overlap_and_confirm_cache"\nsource = "supabase.sql"\n'
    )
    bundle = MigrationBundle(bundle.version, bundle.name, bundle.path)  # read afresh
    assert check_bundle(bundle) == []
    return bundle, source


def test_the_cli_history_follows_the_apply_and_the_rollback(make_database, tmp_path):
    bundle, source = completed_import(tmp_path)
    dsn = make_database()
    with db.connect(dsn) as conn:
        seed_database(conn, 500, seed=2, anchor=dt.date(2026, 12, 1))
        supabase.ensure_history(conn)  # the target was set up with the Supabase CLI
        conn.execute(
            "INSERT INTO supabase_migrations.schema_migrations VALUES ('20240101000000', '{}', 'init')"
        )
    settings = RolloutSettings.from_params({"approvers": ["reviewer"]})
    run = Run(
        settings=dataclasses.replace(settings, bundle=bundle),
        dsns={"staging": dsn},
        artifacts=ArtifactDir(tmp_path / "artifacts"),
        run_id="run_supabase",
        progress=lambda _m: None,
    )
    steps.preflight_target(run, "staging")
    steps.apply_target(run, "staging")
    assert migrated(dsn)
    with db.connect(dsn) as conn:
        rows = supabase.history(conn)
    assert [r["version"] for r in rows] == ["20240101000000", VERSION]
    row = rows[-1]
    assert row["name"] == "capacity_overlap_and_confirm_cache"
    # Exactly the statements the CLI's splitter makes of the file, comments kept.
    assert row["statements"] == supabase.split_statements(source.read_text())
    assert row["statements"][0].startswith("CREATE EXTENSION IF NOT EXISTS btree_gist")
    # The function whole, dollar-quoted body and all, with the comment written above it.
    [function] = [s for s in row["statements"] if "FUNCTION public.confirm_hold_assignment_tx(" in s
                  and "LANGUAGE plpgsql" in s]  # fmt: skip
    assert function.startswith("-- Same signature") and function.endswith("END\n$$")
    assert len(row["statements"]) > 10
    status = read_status("staging", dsn)
    assert status.disagreements == []

    result = steps.rollback_target(run, "staging")
    assert result["action"] == "rolled_back" and not migrated(dsn)
    with db.connect(dsn) as conn:
        assert [r["version"] for r in supabase.history(conn)] == ["20240101000000"]

    # A disagreement planted: the CLI's row back while the ledger says rolled back.
    with db.connect(dsn) as conn:
        supabase.record_applied(conn, bundle.supabase_migration)
    status = read_status("staging", dsn)
    [disagreement] = status.disagreements
    assert f"{VERSION} is rolled back (rollout ledger) but Supabase's history still lists it" in (
        disagreement
    )
    assert "DISAGREES" in render_table([status])


def test_a_version_the_cli_applied_outside_the_rollout_is_refused(make_database, tmp_path):
    dsn = make_database()
    ours = load_bundle(VERSION)
    with db.connect(dsn) as conn:
        supabase.ensure_history(conn)
        supabase.record_applied(conn, ours.supabase_migration)  # `supabase db push` did it
    run = Run(
        settings=RolloutSettings.from_params({"approvers": ["reviewer"]}),
        dsns={"staging": dsn},
        artifacts=ArtifactDir(tmp_path / "artifacts"),
        run_id="run_outside",
        progress=lambda _m: None,
    )
    try:
        steps.preflight_target(run, "staging")
    except steps.StepFailed as exc:
        assert "applied outside the rollout" in str(exc)
    else:
        raise AssertionError("preflight should refuse a version the CLI applied")
    assert not migrated(dsn)

"""A bundle's [online] section: which table its lock phase may rebuild online, or a clear error."""

from __future__ import annotations

import shutil

import pytest

from rollout.errors import BundleError
from rollout.manifest import OnlineSpec, load_manifest
from rollout.migrations import load_bundle
from rollout.online.definition import rewrite_names, strip_comments_and_strings


@pytest.fixture
def folder(tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(load_bundle().path, target)
    return target


def test_the_bundle_names_its_online_table():
    assert load_bundle().manifest.online == OnlineSpec("public.allocations")


def test_without_the_section_there_is_no_online_apply(folder):
    manifest = folder / "manifest.toml"
    manifest.write_text(manifest.read_text().split("[online]")[0])
    assert load_manifest(folder).online is None


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ('table = "allocations"', "not a schema-qualified table name"),
        ('table = "public.allocations"\nbatch = 3', "takes one key"),
        ("table = 3", "not a schema-qualified table name"),
    ],
)
def test_a_bad_online_section_says_what_to_fix(folder, section, error):
    manifest = folder / "manifest.toml"
    manifest.write_text(manifest.read_text().split("[online]")[0] + f"[online]\n{section}\n")
    with pytest.raises(BundleError, match=error):
        load_manifest(folder)


def test_the_lock_phase_is_rewritten_to_the_copy_by_name_only():
    phase = (
        "ALTER TABLE public.allocations DROP CONSTRAINT x;\n"
        'ALTER TABLE "public"."allocations" ADD CHECK (true);\n'
        "DROP INDEX public.allocations_resource_window_idx;\n"
        "SELECT 'public.allocations_other', public.allocations_view;"
    )
    rewritten = rewrite_names(phase, "public", ["allocations", "allocations_resource_window_idx"])
    assert rewritten.count("rollout_shadow.allocations ") == 2
    assert "ALTER TABLE rollout_shadow.allocations ADD CHECK" in rewritten
    assert "DROP INDEX rollout_shadow.allocations_resource_window_idx;" in rewritten
    assert "'public.allocations_other', public.allocations_view" in rewritten


def test_what_is_scanned_for_row_changes_leaves_out_comments_and_strings():
    text = "-- UPDATE x SET y\nRAISE EXCEPTION 'DELETE FROM nowhere'; /* INSERT INTO z */ SELECT 1"
    assert "UPDATE" not in strip_comments_and_strings(text)
    assert "DELETE" not in strip_comments_and_strings(text)
    assert "INSERT" not in strip_comments_and_strings(text)

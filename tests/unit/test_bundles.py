"""Migration bundles on disk: discovery, checksums, the one-transaction contract."""

from __future__ import annotations

import shutil

import pytest

from rollout.errors import BundleError
from rollout.manifest import load_manifest
from rollout.migrations import discover_bundles, load_bundle
from rollout.paths import MIGRATIONS_DIR

VERSION = "20251113203000"


@pytest.fixture
def bundle_copy(tmp_path):
    source = load_bundle(VERSION)
    target = tmp_path / source.path.name
    shutil.copytree(source.path, target)
    return tmp_path


def test_newest_bundle_is_the_default():
    bundle = load_bundle()
    assert (bundle.version, bundle.name) == (VERSION, "capacity_overlap_and_confirm_cache")
    assert [b.version for b in discover_bundles()] == sorted(b.version for b in discover_bundles())


def test_bodies_are_unwrapped_transactions():
    bundle = load_bundle(VERSION)
    for direction in ("up", "down"):
        body = bundle.body(direction)
        assert "BEGIN;" not in body.splitlines()
        assert "COMMIT;" not in body.splitlines()
        assert "allocations" in body


def test_the_allocations_lock_is_taken_last_in_up():
    """After the first statement that locks allocations, only the swap itself runs (and the
    GiST index that serves shadow-inclusive queries is kept, not dropped)."""
    body = load_bundle(VERSION).body("up")
    tail = body[body.index("ALTER TABLE public.allocations") :]
    code = "\n".join(line for line in tail.splitlines() if not line.strip().startswith("--"))
    statements = [s.strip() for s in code.split(";") if s.strip()]
    assert len(statements) == 1
    assert statements[0].startswith("ALTER TABLE public.allocations")
    assert "DROP INDEX" not in body
    assert "ALTER TABLE public.allocations" not in body[: body.index(tail)]


def test_checksum_is_stable_and_sees_an_edit(bundle_copy):
    original = load_bundle(VERSION, bundle_copy)
    assert original.checksum == load_bundle(VERSION).checksum
    up = original.up_path
    up.write_text(up.read_text().replace("CREATE INDEX", "CREATE INDEX  "))
    assert load_bundle(VERSION, bundle_copy).checksum != original.checksum


def test_a_script_without_its_transaction_wrapper_is_refused(bundle_copy):
    bundle = load_bundle(VERSION, bundle_copy)
    bundle.down_path.write_text(bundle.down_path.read_text().replace("COMMIT;", "-- no commit"))
    with pytest.raises(BundleError, match="must be one transaction"):
        bundle.body("down")


def test_malformed_bundle_folders_are_named(tmp_path):
    (tmp_path / "not-a-bundle").mkdir()
    with pytest.raises(BundleError, match="not-a-bundle"):
        discover_bundles(tmp_path)
    shutil.rmtree(tmp_path / "not-a-bundle")
    (tmp_path / "20260101000000_half").mkdir()
    (tmp_path / "20260101000000_half" / "up.sql").write_text("BEGIN;\nCOMMIT;\n")
    with pytest.raises(BundleError, match=r"has no down\.sql"):
        discover_bundles(tmp_path)


def test_bundles_live_under_sql_migrations():
    assert load_bundle(VERSION).path.parent == MIGRATIONS_DIR


@pytest.mark.parametrize(
    ("order", "said"),
    [
        ('["bookings"]', "application_order must list schema-qualified table names"),
        ('"public.bookings"', "application_order must list schema-qualified table names"),
        ('["public.bookings", "public.bookings"]', "application_order names a table twice"),
    ],
)
def test_a_malformed_application_order_is_refused_saying_what_to_write(bundle_copy, order, said):
    bundle = load_bundle(VERSION, bundle_copy)
    manifest = bundle.path / "manifest.toml"
    text = manifest.read_text()
    start = text.index("application_order = [")
    end = text.index("]", start) + 1
    manifest.write_text(text[:start] + f"application_order = {order}" + text[end:])
    with pytest.raises(BundleError, match=said):
        load_manifest(bundle.path)


def test_the_application_order_puts_the_booking_before_its_allocations():
    """The writers insert a booking before its allocations (sql/workload/hold_table.sql): the
    down must take bookings first, or it deadlocks with every booking half-way through."""
    order = load_bundle(VERSION).manifest.application_order
    assert order.index("public.bookings") < order.index("public.allocations")

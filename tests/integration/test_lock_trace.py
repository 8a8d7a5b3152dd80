"""The per-statement lock trace of staging's real apply (issue 25), on real PostgreSQL without
Airflow: each fixture bundle's locks and modes, the gate's text, the manifest's lock_tables
checked against what was measured, apply_mode auto deciding from the trace, the retries."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from rollout import db, report, steps
from rollout.locktrace import script_statements
from rollout.migrations import MigrationBundle
from rollout.seed import seed_database
from tests.target_state import ledger_rows, make_run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bundles"
STAGING_ROWS, PRODUCTION_ROWS = 1500, 4500  # allocations; production three times staging


@pytest.fixture
def sized_targets(make_database) -> dict[str, str]:
    """Staging seeded with 1,500 allocations, production with three times as many."""
    dsns = {}
    for name, size in (("staging", STAGING_ROWS), ("production", PRODUCTION_ROWS)):
        dsns[name] = make_database()
        with db.connect(dsns[name]) as conn:
            seed_database(conn, size, seed=5, anchor=dt.date(2026, 12, 1), progress=lambda _m: None)
    return dsns


def fixture_bundle(name: str, into: Path | None = None) -> MigrationBundle:
    folder = FIXTURES / name
    if into is not None:
        folder = Path(shutil.copytree(folder, into / name))
    version, _, rest = name.partition("_")
    return MigrationBundle(version, rest, folder)


def count(dsn: str, table: str) -> int:
    with db.connect(dsn) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def apply_staging(targets: dict[str, str], tmp_path: Path, bundle=None, **params):
    run, said = make_run(targets, tmp_path, "trace_run", bundle=bundle, **params)
    steps.preflight(run)
    applied = steps.apply_target(run, "staging")
    trace = json.loads((tmp_path / "trace_run/staging/lock-trace.json").read_text())
    return run, applied, trace, said


def statement(trace: dict, starts: str) -> dict:
    [found] = [s for s in trace["statements"] if s["label"].startswith(starts)]
    return found


def modes_on(entry: dict, relation: str) -> set[str]:
    return {lock["mode"] for lock in entry["locks"] if lock["relation"] == relation}


# (bundle, its statement, the table, the mode that statement takes there as measured, the mode
# the transaction holds there while it runs, whether the statement re-took a lock already held)
DANGEROUS = [
    ("20251122000000_allocations_created_at_index", "CREATE INDEX allocations_created_at_idx",
     "public.allocations", "SHARE", "ACCESS EXCLUSIVE"),
    ("20251123000000_bookings_idempotency_key_not_null",
     "ALTER TABLE public.bookings ALTER COLUMN idempotency_key SET NOT NULL",
     "public.bookings", None, "ACCESS EXCLUSIVE"),
    ("20251124000000_bookings_party_size_bigint",
     "ALTER TABLE public.bookings ALTER COLUMN party_size TYPE bigint",
     "public.bookings", None, "ACCESS EXCLUSIVE"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "label", "table", "own_mode", "held"), DANGEROUS, ids=[d[0][15:] for d in DANGEROUS]
)
def test_a_dangerous_bundle_shows_its_locks_and_the_gate_tells_them(
    sized_targets, tmp_path, name, label, table, own_mode, held
):
    run, applied, trace, said = apply_staging(sized_targets, tmp_path, fixture_bundle(name))
    assert trace["target"] == "staging" and trace["attempt"] == 1

    # The runner's own LOCK TABLE (the manifest's lock_tables) takes ACCESS EXCLUSIVE first.
    [runner] = [s for s in trace["statements"] if s["phase"] == "runner"]
    assert runner["label"] == f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    assert modes_on(runner, table) == {"ACCESS EXCLUSIVE"}

    entry = statement(trace, label)
    assert entry["phase"] == "lock phase" and entry["seconds"] > 0
    assert entry["tables"] == [table] and entry["holding"] == {table: held}
    if own_mode:  # a lock weaker than the one held is still a lock of its own
        assert own_mode in modes_on(entry, table)
    # Its rows: the table's exact count on each side, the time scaled by their ratio.
    bare = table.removeprefix("public.")
    staging_rows, production_rows = (
        count(sized_targets[t], table) for t in ("staging", "production")
    )
    assert entry["staging_rows"] == {table: staging_rows} and staging_rows > 0
    assert entry["production_rows"] == {table: production_rows} and production_rows > staging_rows
    assert entry["predicted_s"] == pytest.approx(
        entry["seconds"] * production_rows / staging_rows, rel=1e-3, abs=1e-4
    )
    [hold] = [h for h in trace["holds"] if h["table"] == table and h["mode"] == "ACCESS EXCLUSIVE"]
    assert hold["from_statement"] == runner["n"] and hold["blocks_readers"]

    gate = "\n".join(report.trace_lines(run))
    print(gate)
    assert f"`{entry['label']}`: {held} on {table} held to COMMIT" in gate
    assert f"on staging's {staging_rows:,} rows, predicted " in gate
    assert f"on production's {production_rows:,}; readers and writers wait behind it" in gate
    assert applied["lock_trace"] == "lock-trace.json"
    assert any("lock trace of" in line and bare in line for line in said)


def test_the_real_bundle_traced_keeps_one_transaction_and_its_ledger_row(sized_targets, tmp_path):
    run, applied, trace, _ = apply_staging(sized_targets, tmp_path)
    labels = [s["label"] for s in trace["statements"]]
    # Every statement of up.sql, in order, after the runner's lock of lock_tables.
    assert labels[0].startswith("CREATE EXTENSION IF NOT EXISTS btree_gist")
    lock_at = labels.index("LOCK TABLE public.allocations IN ACCESS EXCLUSIVE MODE")
    adding = statement(
        trace, "ALTER TABLE public.allocations DROP CONSTRAINT allocations_resource_window_excl"
    )
    assert adding["n"] > lock_at + 1 and adding["holding"] == {
        "public.allocations": "ACCESS EXCLUSIVE"
    }
    # The statements before the lock phase hold no lock that makes writers wait on allocations.
    for entry in trace["statements"][:lock_at]:
        assert "public.allocations" not in entry["holding"], entry["label"]
    assert "ADD CONSTRAINT allocations_no_overlap EXCLUDE" in adding["sql"]
    # The cache table's foreign keys take SHARE ROW EXCLUSIVE on the tables they reference:
    # from that statement to COMMIT (through the constraint's build), their writers wait too.
    creating = statement(trace, "CREATE TABLE public.booking_confirmation_results")
    for referenced in ("public.bookings", "public.restaurants"):
        assert "SHARE ROW EXCLUSIVE" in modes_on(creating, referenced)
    new_table = next(lock for lock in creating["locks"] if lock["relation"].endswith("results"))
    assert not new_table["existing"]
    bookings_hold = [h for h in trace["holds"] if h["table"] == "public.bookings"]
    assert bookings_hold[0]["from_statement"] == creating["n"]
    assert bookings_hold[0]["staging_s"] >= adding["seconds"]  # held through the build

    [row] = ledger_rows(sized_targets["staging"])  # written in the traced transaction
    assert row["outcome"] == "applied" and row["run_id"] == "trace_run"
    gate = "\n".join(report.trace_lines(run))
    print(gate)
    assert (
        "ADD CONSTRAINT allocations_no_overlap EXCLUDE …`: ACCESS EXCLUSIVE on public.allocations "
        "held to COMMIT" in gate
    )
    assert "SHARE ROW EXCLUSIVE on public.bookings from here to COMMIT" in gate
    assert "ACCESS EXCLUSIVE on public.allocations held to COMMIT" in gate
    assert "the longest ACCESS EXCLUSIVE hold: public.allocations" in gate
    assert applied["longest_exclusive_hold"]["table"] == "public.allocations"


def test_an_access_exclusive_the_manifest_does_not_name_fails_validate_staging(
    sized_targets, tmp_path
):
    bundle = fixture_bundle("20251124000000_bookings_party_size_bigint", into=tmp_path / "b")
    manifest = bundle.path / "manifest.toml"
    manifest.write_text(manifest.read_text().replace('lock_tables = ["public.bookings"]', ""))
    run, _, trace, _ = apply_staging(sized_targets, tmp_path, bundle)
    assert statement(trace, "ALTER TABLE public.bookings")[
        "locks"
    ]  # measured without a runner lock
    with pytest.raises(steps.StepFailed) as failed:
        steps.validate(run, "staging", data_docs=False)
    message = str(failed.value)
    assert (
        "`ALTER TABLE public.bookings ALTER COLUMN party_size TYPE bigint` takes ACCESS EXCLUSIVE "
        "on public.bookings" in message
    )
    assert "lock_tables" in message and "\n" not in message
    assert not (tmp_path / "trace_run/staging/validation").exists() or not any(
        (tmp_path / "trace_run/staging/validation").iterdir()
    )


def test_auto_decides_from_the_longest_predicted_exclusive_hold(sized_targets, tmp_path):
    run, _, trace, _ = apply_staging(sized_targets, tmp_path, apply_mode="auto", online_above_s=600)
    hold = max(
        (h for h in trace["holds"] if h["mode"] == "ACCESS EXCLUSIVE"),
        key=lambda h: h["predicted_s"],
    )
    # A phase figure over the threshold does not decide: the trace's hold does.
    chosen = steps.choose_apply_mode(run, predicted_lock_s=10_000)
    assert chosen["apply_mode"] == "locking"
    assert (
        "the longest predicted ACCESS EXCLUSIVE hold (public.allocations" in chosen["mode_reason"]
    )
    below = dataclass_replace(run, online_above_s=hold["predicted_s"] / 2)
    chosen = steps.choose_apply_mode(below, predicted_lock_s=0)
    assert chosen["apply_mode"] == "online" and "exceeds online_above_s" in chosen["mode_reason"]


def dataclass_replace(run, **settings):
    import dataclasses

    run.settings = dataclasses.replace(run.settings, **settings)
    return run


def test_a_retried_apply_traces_only_the_attempt_that_committed(sized_targets, tmp_path):
    """Each attempt re-runs the whole transaction: the trace is the committed attempt's."""
    released = threading.Event()
    with db.connect(sized_targets["staging"], autocommit=False) as holder:
        holder.execute("LOCK TABLE public.allocations IN ACCESS SHARE MODE")  # a long reader

        def release() -> None:
            time.sleep(1.5)
            holder.rollback()
            released.set()

        threading.Thread(target=release, daemon=True).start()
        run, applied, trace, said = apply_staging(
            sized_targets, tmp_path, lock_timeout_ms=200, lock_retries=10, retry_backoff_s=0.5
        )
    assert released.is_set() and applied["attempts"] > 1
    assert trace["attempt"] == applied["attempts"]
    # Each statement once: the failed attempts' statements are forgotten.
    script = [s for s in trace["statements"] if s["phase"] != "runner"]
    assert len(script) == len(script_statements(run.bundle.body("up")))
    assert any("attempt" in line for line in said)


def test_the_review_page_shows_the_trace_as_a_table_each_statement_folded(sized_targets, tmp_path):
    from rollout.artifacts import list_tree
    from rollout.review import RunRecord, review_page

    apply_staging(sized_targets, tmp_path, fixture_bundle(DANGEROUS[2][0]))
    root = tmp_path / "trace_run"
    record = RunRecord(
        dag_id="migration_rollout", run_id="trace_run", files=list_tree(root),
        read=lambda name: (root / name).read_text(errors="replace"),
    )  # fmt: skip
    page = review_page(record)
    start = page.index('<table class="lock-trace">')  # (lint notes name lock-trace.json too)
    table = page[start : page.index("</table>", start)]
    assert (
        "<details><summary><code>ALTER TABLE public.bookings ALTER COLUMN party_size TYPE bigint"
        in table
    )
    assert (
        "<pre>-- From here to COMMIT, bookings is locked ACCESS EXCLUSIVE" in table
    )  # the SQL, folded
    assert '<span class="bad">ACCESS EXCLUSIVE on public.bookings</span>' in table  # the runner's
    assert "ACCESS EXCLUSIVE on public.bookings</td>" in table  # held while the rewrite ran
    rows = [count(sized_targets[t], "public.bookings") for t in ("staging", "production")]
    assert f"<td>{rows[0]:,} → {rows[1]:,}</td>" in table


def test_the_online_apply_is_traced_its_swap_as_the_runners_own(sized_targets, tmp_path):
    run, _ = make_run(sized_targets, tmp_path, "trace_run")
    steps.preflight(run)
    applied = steps.apply_target(run, "staging", mode="online")
    trace = json.loads((tmp_path / "trace_run/staging/lock-trace.json").read_text())
    assert applied["apply_mode"] == "online" and trace["apply_mode"] == "online"
    runner = [s["label"] for s in trace["statements"] if s["phase"] == "runner"]
    assert runner == ["the online swap's locks", "the online swap"]
    # The swap's transaction takes ACCESS EXCLUSIVE on the live table first, then runs the
    # statements before up.sql's lock phase; its lock phase was built on the copy meanwhile.
    first = trace["statements"][0]
    assert "ACCESS EXCLUSIVE" in modes_on(first, "public.allocations")
    script = [s for s in trace["statements"] if s["phase"] != "runner"]
    assert script[0]["label"].startswith("CREATE EXTENSION IF NOT EXISTS btree_gist")
    assert all(s["phase"] == "before the lock phase" for s in script)
    assert "the online swap" in "\n".join(report.trace_lines(run))

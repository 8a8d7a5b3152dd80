"""The online apply (rollout.online) on real PostgreSQL, with the application writing: nothing
lost, the constraint enforced throughout, the same catalog as the locking apply, a kill -9 in
any phase leaving the table serving and a re-run converging, refusals that say what is in the
way."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from rollout import db, ledger
from rollout.errors import RollbackRefused
from rollout.lock_retries import LockNotGranted, LockRetries
from rollout.migrations import (
    MigrationBundle,
    apply_down,
    apply_up,
    load_bundle,
    run_check,
)
from rollout.online import (
    AlreadyApplied,
    OnlineOptions,
    OnlineRefused,
    apply_online,
    cleanup,
    leftovers,
    phases,
)
from rollout.online.engine import ONLINE_LOCK_KEY
from rollout.paths import SQL_DIR, sql_text
from rollout.schema import snapshot_schema
from rollout.seed import seed_database
from rollout.workload import ChurnWriters, OverlapProber
from tests.target_state import migrated, wait_until_gone

VERSION = "20251113203000"
BUNDLE = load_bundle(VERSION)
FAST = LockRetries(lock_timeout_ms=300, retries=5, backoff_s=0.2, max_sleep_s=1.0)
SMALL_BATCHES = OnlineOptions(batch_rows=400)


@pytest.fixture
def seeded(make_database) -> str:
    dsn = make_database()
    with db.connect(dsn) as conn:
        seed_database(conn, 2000, seed=7, anchor=dt.date(2026, 12, 1), progress=lambda m: None)
    return dsn


def overlapping_real_pairs(conn) -> int:
    return conn.execute(
        "SELECT count(*) FROM allocations a JOIN allocations b ON a.id < b.id"
        " AND a.resource_type = b.resource_type AND a.resource_id = b.resource_id"
        ' AND a.restaurant_id = b.restaurant_id AND a."window" && b."window"'
        " WHERE NOT a.shadow AND NOT b.shadow"
    ).fetchone()[0]


def table_facts(dsn: str) -> list[tuple]:
    with db.connect(dsn) as conn:
        return conn.execute(sql_text(SQL_DIR / "online" / "table_facts.sql").encode()).fetchall()


def recorded(dsn: str) -> list[tuple[str, str]]:
    with db.connect(dsn) as conn:
        return [(row["phase"], row["status"]) for row in phases(conn)]


# --- live writers --------------------------------------------------------------------------


def test_online_apply_under_live_writers_loses_nothing(seeded):
    """Writers book, move and cancel during the whole online up and down; every committed
    change is there exactly once, no two real allocations overlap, and no overlapping insert
    ever committed meanwhile."""
    with ChurnWriters(seeded) as app, OverlapProber(seeded) as prober:
        time.sleep(0.5)
        with db.connect(seeded) as conn:
            up = apply_online(conn, BUNDLE, "up", retries=FAST, options=SMALL_BATCHES)
            run_check(conn, BUNDLE, "verify_up")
        time.sleep(0.5)
        middle = app.total()
        with db.connect(seeded) as conn:
            assert not app.check(conn)
            down = apply_online(conn, BUNDLE, "down", retries=FAST, options=SMALL_BATCHES)
            run_check(conn, BUNDLE, "verify_down")
        time.sleep(0.5)
    assert not app.errors and not prober.other_errors, (app.errors, prober.other_errors)
    assert middle > 20 and app.total() > middle, app.committed
    assert all(app.committed.values()), app.committed  # booked, moved and cancelled
    assert prober.refused > 10 and prober.committed == 0
    with db.connect(seeded) as conn:
        assert app.check(conn) == []
        assert overlapping_real_pairs(conn) == 0
        assert leftovers(conn) == []
        assert [r["outcome"] for r in ledger.history(conn)] == []  # no ledger row asked for
    for result in (up, down):
        assert result.online["backfilled_rows"] >= 2000
        assert result.lock_seconds < 2.0 and result.seconds > result.lock_seconds
    assert ("swap", "done") in recorded(seeded) and ("retire", "done") in recorded(seeded)


def test_a_deferred_overlap_inside_a_transaction_does_not_fail_it(seeded):
    """The old constraint is INITIALLY DEFERRED: a transaction may overlap a booking for a
    moment and resolve it before COMMIT. While the copy (with the new, immediate constraint)
    is being filled, such a transaction still commits, and its final state arrives."""
    paused, resume = threading.Event(), threading.Event()

    def hold_in_backfill(phase: str) -> None:
        if phase == "backfill-batch" and not paused.is_set():
            paused.set()
            resume.wait(30)

    outcome: dict = {}

    def run() -> None:
        with db.connect(seeded) as conn:
            try:
                outcome["result"] = apply_online(
                    conn, BUNDLE, "up", retries=FAST, options=SMALL_BATCHES,
                    on_phase=hold_in_backfill,
                )  # fmt: skip
            except Exception as exc:  # reported by the assertion below
                outcome["error"] = exc

    engine = threading.Thread(target=run)
    engine.start()
    assert paused.wait(30)
    with db.connect(seeded) as conn, conn.transaction():
        victim, restaurant, resource, window = conn.execute(
            'SELECT id, restaurant_id, resource_id, "window" FROM allocations'
            " WHERE NOT shadow AND resource_type = 'table' ORDER BY id LIMIT 1"
        ).fetchone()
        moved = conn.execute(
            'INSERT INTO allocations (restaurant_id, resource_type, resource_id, "window")'
            " VALUES (%s, 'table', %s, %s) RETURNING id",
            (restaurant, resource, window),
        ).fetchone()[0]  # overlaps `victim` until it moves, below
        conn.execute(
            "UPDATE allocations SET \"window\" = tstzrange('2040-01-01', '2040-01-02')"
            " WHERE id = %s",
            (moved,),
        )
    resume.set()
    engine.join(60)
    assert "error" not in outcome, outcome.get("error")
    with db.connect(seeded) as conn:
        run_check(conn, BUNDLE, "verify_up")
        assert conn.execute(
            'SELECT lower("window") FROM allocations WHERE id = %s', (moved,)
        ).fetchone()[0] == dt.datetime(2040, 1, 1, tzinfo=dt.UTC)
        assert conn.execute("SELECT 1 FROM allocations WHERE id = %s", (victim,)).fetchone()
        assert overlapping_real_pairs(conn) == 0


# --- the catalog: the same as the locking apply ----------------------------------------------

DECORATE = """
COMMENT ON TABLE public.allocations IS 'one row per table (or merge group) a booking holds';
COMMENT ON COLUMN public.allocations.shadow IS 'true for a hold''s tentative allocation';
COMMENT ON INDEX public.allocations_resource_window_idx IS 'availability lookups';
COMMENT ON CONSTRAINT allocations_booking_resource_key ON public.allocations IS 'one per resource';
COMMENT ON POLICY allocations_tenant ON public.allocations IS 'tenant isolation';
ALTER TABLE public.allocations SET (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.05);
ALTER TABLE public.allocations ALTER COLUMN resource_id SET STATISTICS 500;
ALTER TABLE public.allocations REPLICA IDENTITY FULL;
GRANT SELECT (id, "window") ON public.allocations TO PUBLIC;
CREATE FUNCTION public.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER allocations_touch BEFORE UPDATE ON public.allocations
    FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();
CREATE TRIGGER allocations_audit_off AFTER INSERT ON public.allocations
    FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();
ALTER TABLE public.allocations DISABLE TRIGGER allocations_audit_off;
COMMENT ON TRIGGER allocations_touch ON public.allocations IS 'keeps updated_at';
CREATE PUBLICATION supabase_realtime FOR TABLE public.allocations, public.bookings;
"""


def test_the_catalog_after_an_online_apply_equals_the_locking_one(make_database):
    """Everything the table carries comes along: the schema snapshot (columns, defaults,
    constraints, indexes, policies, grants, triggers) and the facts it does not hold (comments,
    options, statistics targets, replica identity, trigger states, publications, ANALYZE)
    are the same after the online and the locking up, and after the down, as before."""
    locking, online = make_database(), make_database()
    for dsn in (locking, online):
        with db.connect(dsn) as conn:
            seed_database(conn, 800, seed=3, anchor=dt.date(2026, 12, 1), progress=lambda m: None)
            conn.execute(DECORATE.encode())
            conn.execute("ANALYZE public.allocations")
    with db.connect(online) as conn:
        before = snapshot_schema(conn)
    before_facts = table_facts(online)
    with db.connect(locking) as conn:
        apply_up(conn, BUNDLE)
    with db.connect(online) as conn:
        apply_online(conn, BUNDLE, "up", retries=FAST)
    with db.connect(locking) as a, db.connect(online) as b:
        assert snapshot_schema(a) == snapshot_schema(b)
        assert leftovers(b) == []
        assert b.execute(
            "SELECT count(*) > 0 FROM pg_stats WHERE schemaname = 'public'"
            " AND tablename = 'allocations'"
        ).fetchone()[0]  # analysed before the swap
    assert table_facts(locking) == table_facts(online)
    with db.connect(locking) as conn:
        apply_down(conn, BUNDLE)
    with db.connect(online) as conn:
        apply_online(conn, BUNDLE, "down", retries=FAST)
    with db.connect(locking) as a, db.connect(online) as b:
        assert snapshot_schema(a) == snapshot_schema(b) == before
    assert table_facts(locking) == table_facts(online) == before_facts


# --- kill -9 in every phase ------------------------------------------------------------------

ENGINE = textwrap.dedent(
    """
    import sys, time
    from rollout import db
    from rollout.lock_retries import LockRetries
    from rollout.migrations import load_bundle
    from rollout.online import OnlineOptions, apply_online

    dsn, stop_at = sys.argv[1], sys.argv[2]

    def on_phase(phase):
        print(phase, flush=True)
        if phase == stop_at:
            time.sleep(120)  # killed here

    conn = db.connect(dsn, application_name="rollout-online-child",
                      session_settings={"client_connection_check_interval": "1s"})
    apply_online(conn, load_bundle(), "up", on_phase=on_phase, options=OnlineOptions(batch_rows=300),
                 retries=LockRetries(300, 5, 0.2, 1.0))
    """
)


def kill_engine_at(dsn: str, phase: str, *, linger_s: float = 0.0) -> None:
    """Run the online apply in a child process and kill -9 it once it reports `phase`."""
    child = subprocess.Popen(
        [sys.executable, "-c", ENGINE, dsn, phase], stdout=subprocess.PIPE, text=True,
        env=os.environ,
    )  # fmt: skip
    seen = []
    for line in child.stdout:
        seen.append(line.strip())
        if seen[-1] == phase:
            break
    assert seen and seen[-1] == phase, seen
    time.sleep(linger_s)
    child.send_signal(signal.SIGKILL)
    child.wait()


@pytest.mark.parametrize("phase", ["backfill-batch", "catch-up-round", "swap-locked"])
def test_a_kill_in_any_phase_leaves_the_table_serving_and_a_rerun_converges(seeded, phase):
    with ChurnWriters(seeded) as app, OverlapProber(seeded) as prober:
        kill_engine_at(seeded, phase, linger_s=0.5)
        with db.connect(seeded) as conn:  # the killed session ends within its check interval
            assert wait_until_gone(conn, "rollout-online-child")
            assert not migrated(seeded)
            assert ("trigger", "rollout_online_capture_insert on allocations") in leftovers(conn), (
                str(leftovers(conn))
            )
        after_kill = app.total()
        deadline = time.monotonic() + 15
        while app.total() <= after_kill + 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert app.total() > after_kill + 3  # the original table serves
        with db.connect(seeded) as conn:
            assert app.check(conn) == []
            result = apply_online(conn, BUNDLE, "up", retries=FAST, options=SMALL_BATCHES)
            run_check(conn, BUNDLE, "verify_up")
        time.sleep(0.5)
    assert not app.errors and not prober.other_errors, (app.errors, prober.other_errors)
    assert prober.committed == 0
    assert result.online["backfilled_rows"] >= 2000
    with db.connect(seeded) as conn:
        assert app.check(conn) == []
        assert overlapping_real_pairs(conn) == 0
        assert leftovers(conn) == []
    states = recorded(seeded)
    assert states.count(("swap", "done")) == 1
    killed_in = {"backfill-batch": "backfill", "catch-up-round": "catch-up"}.get(phase, "swap")
    assert (killed_in, "failed") in states  # the killed run's phase, closed by the re-run
    assert not [state for state in states if state[1] == "started"], states


def test_a_kill_after_the_swap_committed_is_finished_by_cleanup(seeded):
    """Killed once the swap committed (the migration is applied; the foreign keys are still
    NOT VALID, the old table waits in rollout_retired): cleanup validates and drops them."""
    kill_engine_at(seeded, "validate")
    time.sleep(0.5)
    with db.connect(seeded) as conn:
        run_check(conn, BUNDLE, "verify_up")
        assert ("table", "rollout_retired.allocations") in leftovers(conn)
        unchecked = "SELECT count(*) FROM pg_constraint WHERE conrelid = 'allocations'::regclass AND NOT convalidated"
        assert conn.execute(unchecked).fetchone() == (2,)
        done = cleanup(conn, retries=FAST)
        assert any("validated" in line for line in done), done
        assert conn.execute(unchecked).fetchone() == (0,)
        assert leftovers(conn) == []


# --- the down: refused on rows that break the old constraint ---------------------------------


def test_the_online_down_refuses_overlaps_and_names_them(seeded):
    with db.connect(seeded) as conn:
        apply_online(conn, BUNDLE, "up", retries=FAST)
        conn.execute(
            'INSERT INTO allocations (restaurant_id, resource_type, resource_id, "window",'
            ' shadow) SELECT restaurant_id, resource_type, resource_id, "window", true'
            " FROM allocations WHERE NOT shadow ORDER BY id LIMIT 1"
        )  # a hold's tentative allocation over a booking: fine after the up
        with pytest.raises(RollbackRefused, match=r"rollback refused: 1 allocation pair\(s\)"
                           r".*checks/down_conflicts\.sql"):  # fmt: skip
            apply_online(conn, BUNDLE, "down", retries=FAST)
        run_check(conn, BUNDLE, "verify_up")
        assert leftovers(conn) == []
        assert migrated(seeded)


# --- refusals --------------------------------------------------------------------------------


def bundle_copy(tmp_path, edit) -> MigrationBundle:
    folder = tmp_path / BUNDLE.path.name
    shutil.copytree(BUNDLE.path, folder)
    edit(folder)
    return MigrationBundle(BUNDLE.version, BUNDLE.name, folder)


def add_to_lock_phase(statement: str):
    def edit(folder):
        up = folder / "up.sql"
        up.write_text(up.read_text().replace("\nCOMMIT;", f"\n{statement}\nCOMMIT;"))

    return edit


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("UPDATE public.allocations SET is_maintenance = false WHERE false;", r"changes rows"),
        ("ALTER TABLE public.bookings ADD COLUMN note text;",
         r"takes AccessExclusiveLock on (public\.)?bookings.*column public\.bookings\.note"),
        ("ALTER TABLE public.allocations RENAME COLUMN shadow TO tentative;",
         r"renames column shadow to tentative"),
        ("CREATE FUNCTION public.extra() RETURNS int LANGUAGE sql AS 'SELECT 1';",
         r"changes function .*extra\(\)"),
    ],
)  # fmt: skip
def test_a_lock_phase_that_cannot_run_online_is_refused(seeded, tmp_path, statement, refusal):
    bundle = bundle_copy(tmp_path, add_to_lock_phase(statement))
    with db.connect(seeded) as conn:
        with pytest.raises(OnlineRefused, match=refusal):
            apply_online(conn, bundle, "up", retries=FAST)
        assert leftovers(conn) == []
    assert not migrated(seeded)


def test_what_depends_on_the_table_is_refused_by_name(seeded, tmp_path):
    with db.connect(seeded) as conn:
        conn.execute("CREATE VIEW public.busy_tables AS SELECT resource_id FROM allocations")
        with pytest.raises(OnlineRefused, match=r"view (public\.)?busy_tables depends on it"):
            apply_online(conn, BUNDLE, "up", retries=FAST)
        assert leftovers(conn) == []

    def no_online(folder):
        manifest = folder / "manifest.toml"
        manifest.write_text(manifest.read_text().split("[online]")[0])

    with db.connect(seeded) as conn, pytest.raises(OnlineRefused, match=r"no \[online\] section"):
        apply_online(conn, bundle_copy(tmp_path, no_online), "up")
    assert not migrated(seeded)


def test_one_online_apply_at_a_time(seeded):
    with db.connect(seeded) as other, db.connect(seeded) as conn:
        other.execute("SELECT pg_advisory_lock(%s)", (ONLINE_LOCK_KEY,))
        with pytest.raises(ledger.TargetBusy, match="another online apply is running"):
            apply_online(conn, BUNDLE, "up")
        with pytest.raises(ledger.TargetBusy, match="another online apply is running"):
            cleanup(conn)
    assert not migrated(seeded)


def test_two_online_applies_at_once_on_a_fresh_database_one_is_refused(seeded):
    """Issue 23: on a database that never had a rollout, the second apply died on the ledger's
    CREATE SCHEMA (UniqueViolation) instead of being refused: the guard now comes first."""
    with db.connect(seeded) as conn:
        assert conn.execute("SELECT to_regnamespace('rollout') IS NULL").fetchone()[0]
    start = threading.Barrier(2)
    refused = threading.Event()  # the winner waits in its first phase until the other is done
    outcomes: list[object] = []

    def apply() -> None:
        try:
            with db.connect(seeded) as conn:
                start.wait(timeout=30)
                result = apply_online(
                    conn, BUNDLE, "up", retries=FAST, options=SMALL_BATCHES,
                    on_phase=lambda phase: phase == "prepare" and refused.wait(timeout=60),
                )  # fmt: skip
            outcomes.append(result)
        except Exception as exc:  # what each apply ended with is the test's finding
            outcomes.append(exc)
        finally:
            refused.set()

    threads = [threading.Thread(target=apply) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(outcomes) == 2 and len(errors) == 1, outcomes
    assert isinstance(errors[0], ledger.TargetBusy), repr(errors[0])
    assert "another online apply is running" in str(errors[0])
    with db.connect(seeded) as conn:
        run_check(conn, BUNDLE, "verify_up")
        assert leftovers(conn) == []


def test_a_rerun_after_a_kill_once_the_swap_committed_says_already_applied(seeded):
    """Issue 23: the re-run finished the cleanup, then advised apply_mode 'locking' for a
    migration already applied, and the killed phase stayed `started` forever."""
    kill_engine_at(seeded, "validate")
    with db.connect(seeded) as conn:
        assert wait_until_gone(conn, "rollout-online-child")
        assert ("validate", "started") in [(r["phase"], r["status"]) for r in phases(conn)]
        with pytest.raises(AlreadyApplied, match="already applied") as refused:
            apply_online(conn, BUNDLE, "up", retries=FAST, options=SMALL_BATCHES)
        assert "locking" not in str(refused.value)
        assert "validated" in str(refused.value)  # what the killed run left, finished
        run_check(conn, BUNDLE, "verify_up")
        assert leftovers(conn) == []
        rows = phases(conn)
    assert [r for r in rows if r["status"] == "started"] == []
    [validate] = [r for r in rows if r["phase"] == "validate"]
    assert validate["status"] == "failed" and "interrupted" in validate["detail"]["error"]
    [swap] = [r for r in rows if r["phase"] == "swap"]
    assert swap["status"] == "done" and swap["detail"]["committed"] is True


# --- the swap's lock not granted -------------------------------------------------------------


def test_a_swap_that_cannot_get_its_lock_leaves_the_table_serving(seeded):
    """A report holds allocations for the whole apply: the swap gives up after its retries,
    the table serves on with every write; once it is gone, a re-run cleans up and converges."""
    patient = LockRetries(lock_timeout_ms=100, retries=2, backoff_s=0.1, max_sleep_s=0.2)
    with ChurnWriters(seeded) as app:
        reader = db.connect(seeded, autocommit=False)
        reader.execute("SELECT count(*) FROM allocations")  # ACCESS SHARE until rollback
        with db.connect(seeded) as conn, pytest.raises(LockNotGranted, match="3 attempts"):
            apply_online(conn, BUNDLE, "up", retries=patient)
        assert not migrated(seeded)
        reader.rollback()
        reader.close()
        with db.connect(seeded) as conn:
            apply_online(conn, BUNDLE, "up", retries=FAST)
            run_check(conn, BUNDLE, "verify_up")
            assert leftovers(conn) == []
        time.sleep(0.3)
    assert not app.errors
    with db.connect(seeded) as conn:
        assert app.check(conn) == []


# --- as Supabase's postgres role ---------------------------------------------------------------


def test_the_online_apply_runs_as_a_non_superuser_owner(pg_server, make_database):
    """NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS, owning the database and
    the tables, with a publication of its own listing allocations (Supabase's realtime)."""
    role = f"rollout_online_owner_{os.getpid()}"
    with db.connect(pg_server.admin_dsn) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(
            f"CREATE ROLE {role} NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS"
        )
    try:
        dsn = db.with_user(make_database(baseline=False, owner=role), role)
        with db.connect(dsn) as conn:
            from rollout.baseline import apply_baseline

            apply_baseline(conn)
            seed_database(conn, 500, anchor=dt.date(2026, 12, 1), progress=lambda m: None)
            conn.execute("CREATE PUBLICATION supabase_realtime FOR TABLE public.allocations")
            with ChurnWriters(dsn, count=1):
                result = apply_online(conn, BUNDLE, "up", retries=FAST)
                run_check(conn, BUNDLE, "verify_up")
                apply_online(conn, BUNDLE, "down", retries=FAST)
                run_check(conn, BUNDLE, "verify_down")
            assert conn.execute(
                "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'supabase_realtime'"
                " AND tablename = 'allocations'"
            ).fetchone() == (1,)
            assert result.online["free_bytes"] is None  # it may not see the data directory
            assert leftovers(conn) == []
    finally:
        from psycopg.conninfo import conninfo_to_dict

        if "dsn" in locals():
            db.drop_database(pg_server.admin_dsn, conninfo_to_dict(dsn)["dbname"])
        with db.connect(pg_server.admin_dsn) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")

"""The review page from a run's folder, without Airflow: what a reviewer must see first (the
verdict and why), each step's evidence (failures first), the ledger as the run left it beside
the ledger now, the approval, the files; and nothing a database value carries becomes markup.

Runs are laid out as the steps write them, through the same writers where they are plain
functions (the db-diff, the plot); the shapes of the validation and test reports are the ones
tests/integration checks their writers produce."""

from __future__ import annotations

import html
import re
from functools import cache
from pathlib import Path

from rollout import lint
from rollout.artifacts import ArtifactDir, list_tree
from rollout.diff import diff_snapshots, write_diff
from rollout.errors import KILLED
from rollout.migrations import load_bundle
from rollout.probes import PerfSnapshot, ProbePlan, ProbeStats, plot_png
from rollout.review import RunRecord, markdown_page, review_page, target_page

RUN = "manual__2026-11-29T10:00:00+00:00"
LATER = "manual__2026-11-30T09:00:00+00:00"
VERSION = "20251113203000"
SCRIPT = "<script>fetch('/api/v2/dags')</script>"
STORY = (
    "preflight", "apply_staging", "validate_staging", "capture_db_diff", "run_assignment_tests",
    "check_window_and_budget", "approve_production", "wait_for_window", "baseline_production_perf",
    "apply_production", "validate_production", "monitor_production_perf",
)  # fmt: skip
OUTBOX = "outbox event types are ones the consumers know"


def record_of(root: Path, dag_id: str = "migration_rollout", **kwargs) -> RunRecord:
    return RunRecord(
        dag_id=dag_id,
        run_id=RUN,
        files=list_tree(root),
        read=lambda name: (root / name).read_text(errors="replace"),
        **kwargs,
    )


def text_of(page: str) -> str:
    """What a person reads: the page's body without its tags, its entities resolved."""
    body = page[page.index("<body>") :]
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())
    return re.sub(r" ([.,:;)])", r"\1", text)


def ledger_row(row_id: int, direction: str, outcome: str, run_id: str = RUN, lock_s=0.25) -> dict:
    return {
        "id": row_id, "version": VERSION, "direction": direction, "outcome": outcome,
        "run_id": run_id, "actor": "admin", "finished_at": f"2026-11-29 10:0{row_id}:00+00:00",
        "lock_s": lock_s, "detail": "locking, attempt 1 of 6", "checksum": "1ed579ddac5f",
        "this_run": run_id == RUN,
    }  # fmt: skip


def expectation(description: str, table: str, success: bool = True, **facts) -> dict:
    return {"description": description, "table": table, "success": success,
            "expectation": facts.pop("kind", "expect_column_values_to_be_in_set"),
            "observed": facts.pop("observed", {"unexpected_count": 0, "partial_unexpected_list": []}),
            "expected": facts.pop("expected", "event_type in {booking.created}"),
            "query": None, "error": None, **facts}  # fmt: skip


def validation(folder: ArtifactDir, failing: list[dict] | None = None) -> None:
    failing = failing or []
    rows = [
        expectation(OUTBOX, "capacity_outbox"),
        expectation("allocations has as many rows as before the apply", "allocations",
                    kind="expect_table_row_count_to_equal", observed=3000, expected="3,000 rows"),
    ]  # fmt: skip
    if failing:
        rows = [r for r in rows if r["description"] not in {f["description"] for f in failing}]
        rows += failing
    catalog = [{"name": "constraint public.allocations.allocations_no_overlap definition",
                "passed": True, "detail": "EXCLUDE USING gist (...)"}]  # fmt: skip
    gx = {"suite": "post_migration", "success": not failing, "evaluated": len(rows),
          "successful": len(rows) - len(failing), "seconds": 1.5,
          "failed": [f"{r['table']}: {r['description']}" for r in failing]}  # fmt: skip
    folder.write_json("validation-post_migration.json", {**gx, "expectations": rows})
    folder.write_json("validation-report.json", {
        "phase": "post_migration", "success": not failing, "gx": gx, "catalog": catalog,
        "failures": gx["failed"]})  # fmt: skip
    folder.write_text("validation-report.md", "# Validation\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    folder.write_text("data-docs/index.html", "<html>docs</html>")
    folder.write_text("data-docs/static/fonts/font.woff", "font")


@cache
def seed_lint() -> lint.LintReport:
    """Squawk on the seed bundle, run once by the real linter."""
    return lint.lint_bundle(load_bundle(VERSION))


@cache
def plot() -> bytes:
    """The monitoring plot, drawn once by the real plotter."""
    return plot_png({"baseline": snapshot(1), "after": snapshot(1.1)})


def snapshot(p50: float) -> PerfSnapshot:
    stats = {
        name: ProbeStats(40, p50, p50 * 2, p50, p50 * 3) for name in ("availability", "day_view")
    }
    plans = {name: ProbePlan("Index Scan", ["Index Scan"]) for name in stats}
    return PerfSnapshot("2026-11-29T10:05:00+00:00", "p", "18", [], stats, plans, "none", 1.0)


def perf(folder: ArtifactDir, regressed: bool = False) -> None:
    probe = {
        "probe": "availability", "regressed": regressed, "plan_changed": True,
        "plan_before": ["Index Scan using allocations_resource_window_excl"],
        "plan_after": ["Index Scan using allocations_no_overlap"],
        "before": {"server_time_p50_ms": 0.5}, "after": {"server_time_p50_ms": 0.48},
        "ratio_vs_control": 0.97, "p_value": 0.4, "added_ms": -0.01, "decided_by": "effect size",
        "reason": "0.97x against the control <= 2x",
    }  # fmt: skip
    folder.write_json("perf-monitor.json", {"ok": not regressed, "comparison": {
        "threshold": 2.0, "alpha": 0.01, "min_delta_ms": 0.5, "period_s": 5, "probes": [probe]}})  # fmt: skip
    folder.write_bytes(
        "perf-monitor.png", plot_png({"baseline": snapshot(1), "after": snapshot(1.1)})
    )
    folder.write_text("perf-monitor.md", "# Performance\n")
    folder.write_text(
        "plans/baseline/availability.txt", "Index Scan using allocations_resource_window_excl\n"
    )
    folder.write_text("plans/monitor/availability.txt", "Index Scan using allocations_no_overlap\n")


def lay_out(root: Path, kind: str = "succeeded") -> ArtifactDir:
    """A run of migration_rollout as its steps leave it: succeeded, rejected at the gate, or
    rolled back after production's validation failed."""
    run = ArtifactDir(root)
    run.write_json("run.json", {"run_id": RUN, "actor": "admin", "version": VERSION,
                                "checksum": "1ed579ddac5f", "window": "now for 120 min, UTC",
                                "targets": {"staging": "s_app", "production": "p_app"}})  # fmt: skip
    lint.write_report(seed_lint(), run)
    states = dict.fromkeys(STORY, "success") | {"rollback_staging": "skipped",
                                                "rollback_production": "skipped"}  # fmt: skip
    before = {("table", "public.bookings"): "owner postgres", ("index", "public.old_idx"): "CREATE INDEX old_idx",
              ("function", "public.confirm()"): "BEGIN\n  RETURN 1;\nEND"}  # fmt: skip
    after = {("table", "public.bookings"): "owner postgres", ("index", "public.new_idx"): "CREATE INDEX new_idx",
             ("constraint", "public.allocations.no_overlap"): "EXCLUDE USING gist (...)",
             ("function", "public.confirm()"): "BEGIN\n  RETURN 2;\nEND"}  # fmt: skip
    write_diff(diff_snapshots(before, after), run, "db-diff.txt", "staging before", "staging after")
    write_diff(
        diff_snapshots(before, before), run, "drift-db-diff.txt", "staging before", "production now"
    )
    validation(run.subdir("staging/validation"))
    run.write_json("staging/assignment/assignment-report.json", {
        "success": True, "line": "2 passed, 0 failed, 0 errors, 0 skipped", "passed": 2, "failed": 0,
        "errors": 0, "skipped": 0, "seconds": 3.0,
        "tests": [{"name": "test_confirm::test_one", "outcome": "passed", "message": ""}] * 2})  # fmt: skip
    run.write_json("lock-and-window.json", {
        "predicted_lock_s": 0.32, "lock_budget_s": 300.0, "window": "now for 120 min, UTC",
        "apply_mode": "locking", "mode_reason": "the bundle allows no online apply",
        "action": "go", "reason": "window open; predicted lock 0.3 s fits", "staging_lock_s": 0.3,
        "staging_rows": 3000, "production_rows": 3200})  # fmt: skip
    run.write_json("approval-request.json", {
        "subject": "Apply the bundle to production?", "assignees": ["reviewer"], "timeout_h": 24,
        "body": f"**bundle** passed its checks.\n\n- Validation: ok {SCRIPT}\n"})  # fmt: skip
    staging_rows = [ledger_row(1, "up", "applied")]
    production_rows = [ledger_row(1, "up", "applied", lock_s=0.18)]
    answer = {"answer": "Approve", "by": "reviewer", "at": "2026-11-29T10:03:00+00:00"}
    outcome = "succeeded"
    if kind == "rejected":
        answer = {**answer, "answer": "Reject"}
        for task in STORY[7:]:
            states[task] = "upstream_failed"
        states |= {"approve_production": "failed", "rollback_staging": "success"}
        staging_rows.append(ledger_row(2, "down", "rolled_back"))
        production_rows = []
        outcome = "not approved (rejected or timed out); production untouched, staging rolled back"
        run.write_json("staging/rollback/db-diff-after-rollback.json", {
            "summary": "no differences", "counts": {"added": 0, "removed": 0, "changed": 0},
            "added": [], "removed": [], "changed": []})  # fmt: skip
    else:
        run.write_json("window-decision.json", {
            "action": "go", "reason": "window open", "predicted_lock_s": 0.32,
            "window_lock_s": 0.32, "apply_mode": "locking", "lock_budget_s": 300.0,
            "window": "now for 120 min, UTC", "at": "2026-11-29T10:04:00+00:00"})  # fmt: skip
        perf(run.subdir("production/perf"))
    if kind == "rolled back":
        failing = expectation(OUTBOX, "capacity_outbox", success=False, observed={
            "unexpected_count": 1, "partial_unexpected_list": [SCRIPT]})  # fmt: skip
        validation(run.subdir("production/validation"), [failing])
        run.write_text(
            "failures/validate_production.txt", f"validate production: {OUTBOX} failed\n"
        )
        states |= {"validate_production": "failed", "monitor_production_perf": "upstream_failed",
                   "rollback_production": "success"}  # fmt: skip
        production_rows.append(ledger_row(2, "down", "rolled_back"))
        outcome = "rolled back in production after validate_production failed"
        write_diff(diff_snapshots(before, before), run.subdir("production/rollback"),
                   "db-diff-after-rollback.txt", "before", "after rollback")  # fmt: skip
    elif kind == "succeeded":
        validation(run.subdir("production/validation"))
    run.write_json("approval.json", answer)
    for target, rows in (("staging", staging_rows), ("production", production_rows)):
        run.write_json(
            f"{target}/ledger.json", {"taken_at": "2026-11-29T10:09:00+00:00", "rows": rows}
        )
    run.write_json("outcome.json", {"outcome": outcome, "states": states, "targets": {
        "staging": "applied by this run", "production": "applied by this run"}})  # fmt: skip
    run.write_text("summary.md", f"# Rollout {VERSION}: {outcome}\n")
    return run


def test_a_succeeded_run_says_so_first_and_shows_each_steps_evidence(tmp_path):
    lay_out(tmp_path)
    page = review_page(record_of(tmp_path))
    text = text_of(page)
    assert text.index("Succeeded") < text.index("The story")
    assert "approval: Approve by reviewer at 2026-11-29 10:03:00 UTC" in text
    # The db-diff's counts and each object, drift none; the lock predicted and held.
    assert "2 added 1 removed 1 changed" in text
    assert "+ constraint public.allocations.no_overlap" in text and "- index public.old_idx" in text
    assert 'class="plus">+ RETURN 2;' in page.replace("  ", " ")
    assert (
        "Drift: staging before against production now 0 added 0 removed 0 changed no differences"
        in text
    )
    assert "Lock held 0.18 s Lock predicted 0.32 s (budget 300.00 s)" in text
    assert (
        "Predicted from staging's 0.30 s over 3,000 rows, scaled to 3,200 rows in production"
        in text
    )
    # The plot shown inline, the plan that changed, each probe's decision.
    assert '<img src="files/production/perf/perf-monitor.png"' in page
    assert (
        "availability: Index Scan using allocations_resource_window_excl → Index Scan using allocations_no_overlap"
        in text
    )
    # The ledger as the run left it, and no "now" (the plugin did not read one here).
    assert "Ledger of production (p_app)" in text
    assert (
        f"As this run left it (read by its report at 2026-11-29 10:09:00 UTC): {VERSION} applied by this run"
        in text
    )
    # Files grouped; Data Docs as one entry and a download, not their fonts.
    assert "production / perf" in text and "staging / validation" in text
    assert "fonts" not in page and 'href="zip/staging/validation/data-docs"' in page
    assert 'href="view/staging/validation/validation-report.md"' in page


def test_a_run_rolled_back_after_production_validation_names_the_failing_expectation(tmp_path):
    lay_out(tmp_path, "rolled back")
    page = review_page(record_of(tmp_path))
    text = text_of(page)
    assert text.startswith(f"migration_rollout / {RUN} Rollout {VERSION}")
    verdict = text[text.index("Rolled back in production") : text.index("The story")]
    assert f"validate_production failed: validate production: {OUTBOX} failed" in verdict
    production = text[text.index("Validation on production") :]
    # The failing expectation first, what it expected beside what it found.
    first_row = production[production.index("result expectation table observed expected") :]
    assert first_row.split(" ok ")[0].count("FAILED") == 1 and OUTBOX in first_row.split(" ok ")[0]
    assert "1 unexpected: " + SCRIPT in text  # shown as text...
    assert SCRIPT not in page and "&lt;script&gt;" in page  # ...never as markup
    rollback = text[text.index("Rollback of production") :]
    assert (
        "Schema after the rollback against the before snapshot 0 added 0 removed 0 changed no differences"
        in rollback
    )
    assert "rolled_back" in rollback.split("Ledgers")[0]


def test_a_rejected_run_names_who_rejected_it_and_when(tmp_path):
    lay_out(tmp_path, "rejected")
    text = text_of(review_page(record_of(tmp_path)))
    assert "Rejected Reject by reviewer at 2026-11-29 10:03:00 UTC" in text
    approval = text[text.index("Approval approve_production") :]
    assert "Answer Reject By reviewer At 2026-11-29 10:03:00 UTC" in approval
    assert "What the approver was shown: Apply the bundle to production?" in approval
    assert "Who may answer: reviewer" in approval


def test_the_ledger_now_is_shown_beside_the_runs_when_a_later_run_changed_it(tmp_path):
    lay_out(tmp_path)
    now = [ledger_row(1, "up", "applied", lock_s=0.18), ledger_row(2, "down", "rolled_back", LATER)]
    for row in now:
        row.pop("this_run")
    record = record_of(tmp_path, current={"p_app": {"rows": now, "table": "p_app  status"},
                                          "s_app": "cannot read the ledger of s_app"})  # fmt: skip
    text = text_of(review_page(record))
    production = text[text.index("Ledger of production (p_app)") : text.index("Approval Answer")]
    assert f"{VERSION} applied by this run" in production  # as the run left it...
    assert (
        f"Now: {VERSION} rolled back by run {LATER}: later runs changed this target since"
        in production
    )
    assert f"{LATER} (after this run)" in production  # ...and the row that changed it
    assert "Now: cannot read the ledger of s_app" in text
    record.current["p_app"]["rows"] = now[:1]
    assert "Now: the same." in text_of(review_page(record))


def test_a_run_waiting_at_its_gate_says_who_must_answer(tmp_path):
    run = lay_out(tmp_path)
    for name in ("outcome.json", "approval.json", "window-decision.json"):
        run.path(name).unlink()
    states = dict.fromkeys(STORY[:6], "success") | {"approve_production": "awaiting_input"}
    page = review_page(record_of(tmp_path, states=states, run_state="running"))
    text = text_of(page)
    assert "Waiting for approval approve_production waits for reviewer (Required Actions)" in text
    assert (
        f"/dags/migration_rollout/runs/{RUN.replace(':', '%3A').replace('+', '%2B')}/tasks/approve_production/required_actions"
        in page
    )
    assert "What the approver was shown" in text and SCRIPT not in page


def test_a_refused_run_says_why_before_anything_else(tmp_path):
    run = ArtifactDir(tmp_path)
    why = "approvers: only admin, who triggered this run, is named"
    run.write_json("outcome.json", {"outcome": "refused before any change", "refused": why,
                                    "states": {"preflight": "failed"}, "targets": {}})  # fmt: skip
    run.write_text("failures/preflight.txt", why)
    text = text_of(review_page(record_of(tmp_path)))
    assert text.index("Refused before any change") < text.index(why) < text.index("The story")


def test_a_fleet_run_has_one_row_per_target_each_linking_its_own_evidence(tmp_path):
    run = ArtifactDir(tmp_path)
    targets = ["f_0", "f_1", "f_2"]
    run.write_json("run.json", {"run_id": RUN, "actor": "admin", "version": VERSION,
                                "targets": {"staging": "s_fleet", "production": targets},
                                "waves": [["f_0"], ["f_1", "f_2"]]})  # fmt: skip
    rows = [
        {"conn_id": "f_0", "wave": 0, "slot": 0, "state": "applied", "why": ""},
        {"conn_id": "f_1", "wave": 1, "slot": 0, "state": "refused", "why": "preflight: ON CONFLICT arbiter"},
        {"conn_id": "f_2", "wave": 1, "slot": 1, "state": "not applied", "why": "not started: the fleet stopped after f_1 failed"},
    ]  # fmt: skip
    run.write_json(
        "fleet-report.json",
        {"outcome": "failed: 1 applied, 1 not applied, 1 refused", "targets": rows},
    )
    f0 = run.subdir("targets/f_0")
    validation(f0.subdir("production/validation"))
    perf(f0.subdir("production/perf"))
    f0.write_json("production/ledger.json", {"rows": [ledger_row(1, "up", "applied")]})
    run.subdir("targets/f_1").write_text("failures/preflight.txt", "preflight: ON CONFLICT arbiter")
    f0.write_json(
        "steps.json", dict.fromkeys(("preflight", "apply", "validate", "monitor"), "success")
    )
    run.subdir("targets/f_1").write_json("steps.json", {"preflight": "failed"})
    states = {"wave_0.target_0": "success", "wave_1.target_0": "failed",
              "wave_1.target_1": "skipped", "rollback_targets": "skipped"}  # fmt: skip
    record = record_of(tmp_path, "fleet_rollout", states=states, run_state="failed")
    page = review_page(record)
    text = text_of(page)
    assert "Failed: 1 applied, 1 not applied, 1 refused" in text
    targets_table = text[text.index("target wave state why") :]
    assert (
        "f_0 0 (canary) applied f_1 1 refused preflight: ON CONFLICT arbiter f_2 1 not applied"
        in targets_table
    )
    assert '<a href="targets/f_0/">f_0</a>' in page
    assert "Ledger of production (f_2)" in text
    own = text_of(target_page(record, "f_0"))
    assert "f_0: wave 0 (canary)" in own and "Passed: 2/2 expectations met" in own
    assert "the fleet's review" in own and "Index Scan using allocations_no_overlap" in own
    assert "Preflight and performance baseline" in own
    assert "success Validation" in own and "not run Rollback" in own
    refused = text_of(target_page(record, "f_1"))
    assert "failed Preflight and performance baseline" in refused
    assert "Why it failed: preflight: ON CONFLICT arbiter" in refused
    assert "not run Apply" in refused
    stopped = text_of(target_page(record, "f_2"))
    assert "skipped Preflight and performance baseline" in stopped
    assert target_page(record, "not_a_target") is None


def test_a_markdown_file_is_rendered_its_links_to_the_runs_files(tmp_path):
    run = lay_out(tmp_path)
    run.write_text(
        "staging/validation/notes.md",
        f"[docs](data-docs/index.html) {SCRIPT}\n\n| a |\n|---|\n| 1 |\n",
    )
    page = markdown_page(record_of(tmp_path), "staging/validation/notes.md")
    assert 'href="../../../files/staging/validation/data-docs/index.html"' in page
    assert "<table>" in page and SCRIPT not in page
    assert 'href="../../../static/review.css"' in page


def test_every_page_loads_only_from_the_runs_own_routes(tmp_path):
    lay_out(tmp_path, "rolled back")
    page = review_page(record_of(tmp_path))
    assert "<script" not in page and "style=" not in page  # the CSP allows neither
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    # The one kind of link out: Squawk's documentation of a rule, followed, never loaded.
    docs = re.findall(
        r'<a href="(https://squawkhq\.com/docs/[a-z-]+)" rel="noopener noreferrer">', page
    )
    assert len(docs) == 8
    outside = [s for s in sources if s.startswith(("http:", "https:", "//"))]
    assert sources and sorted(outside) == sorted(docs)
    loaded = re.findall(r'<(?:img|link)[^>]*(?:src|href)="([^"]*)"', page)
    assert sorted(loaded) == ["files/production/perf/perf-monitor.png", "static/review.css"]


def test_a_bundle_edited_after_preflight_shows_in_red_with_both_checksums(tmp_path):
    run = lay_out(tmp_path)
    edited = "a785f5b7c0de"
    run.write_json("bundle-mismatch.json", {
        "step": "apply production", "approved": "1ed579ddac5f", "on_disk": edited,
        "folder": "/bundles/20251113203000_capacity", "at": "2026-11-29T10:05:00+00:00"})  # fmt: skip
    # An older run applied the version from other bytes than this run's: red in the ledger.
    other = {**ledger_row(1, "up", "applied", run_id=LATER), "checksum": edited}
    run.write_json("production/ledger.json", {"taken_at": "2026-11-29T10:09:00+00:00",
                                               "rows": [other]})  # fmt: skip
    page = review_page(record_of(tmp_path))
    text = text_of(page)
    assert (
        "The bundle was edited after preflight. apply production found "
        "/bundles/20251113203000_capacity with checksum a785f5b7c0de, not 1ed579ddac5f"
    ) in text
    assert text.index("edited after preflight") < text.index("The story")
    assert 'class="failure bad" id="bundle-mismatch"' in page
    # Every ledger row shows its checksum; one of other bytes is marked.
    assert "Ledger of staging (s_app)" in text and "1ed579ddac5f" in text
    assert re.search(r'<td class="bad"[^>]*><code>a785f5b7c0de</code> \(not this run', page)
    assert page.count("(not this run's)") == 1


def test_a_step_that_failed_without_a_reason_is_named_killed_a_rejected_gate_is_not(tmp_path):
    lay_out(tmp_path, "rejected")
    assert KILLED not in review_page(record_of(tmp_path))  # the gate's answer says why
    states = dict.fromkeys(STORY[:9], "success") | {"apply_production": "failed"}
    text = text_of(review_page(record_of(tmp_path, states=states)))
    assert f"Why it failed: {KILLED}" in text


def test_a_version_applied_everywhere_already_says_nothing_to_do_first(tmp_path):
    run = ArtifactDir(tmp_path)
    why = "20251113203000 (checksum 1ed579ddac5f) is applied on every target already"
    run.write_json("outcome.json", {
        "outcome": "nothing to do: already applied on every target", "nothing_to_do": why,
        "states": {"preflight": "skipped", "approve_production": "skipped"}, "targets": {}})  # fmt: skip
    run.write_text("notes/preflight.txt", why)
    text = text_of(review_page(record_of(tmp_path)))
    assert text.index("Nothing to do: already applied") < text.index(why) < text.index("The story")


def test_preflight_shows_squawks_findings_warnings_first_each_rule_linked(tmp_path):
    run = lay_out(tmp_path)
    # The seed's findings as a bundle whose down the rollout would not answer would have them:
    # one warning (the seed itself has none), to show where a warning goes.
    kept = seed_lint().as_json()
    [down_timeout] = [
        f for f in kept["findings"]
        if f["script"] == "down.sql" and f["rule"] == "require-statement-timeout"
    ]  # fmt: skip
    down_timeout |= {"status": "warning", "note": None}
    kept["summary"] = (
        "Squawk (2.70.0): 8 finding(s) in up.sql and down.sql: 5 answered by how the rollout runs "
        "the script, 2 accepted in manifest.toml, 1 warning(s) to read"
    )
    run.write_json("lint.json", kept)
    page = review_page(record_of(tmp_path))
    text = text_of(page)
    assert (
        "Squawk's findings on up.sql and down.sql Squawk (2.70.0): 8 finding(s) in up.sql and "
        "down.sql: 5 answered by how the rollout runs the script, 2 accepted in manifest.toml, "
        "1 warning(s) to read"
    ) in text
    section = text[
        text.index("Squawk's findings") : text.index("lint.json", text.index("Squawk's findings"))
    ]
    # The warning the rollout does not answer comes first; the accepted with its reason; the
    # exclusion constraint's advice beside why it cannot be followed and what answers it.
    assert (
        section.index("down.sql:52 require-statement-timeout")
        < section.index("up.sql:215 ban-drop-constraint")
        < section.index("up.sql:217 constraint-missing-not-valid")
    )
    assert "warning: not answered by the rollout, read it" in section
    assert (
        "accepted by the bundle's author: allocations_resource_window_excl is replaced" in section
    )
    assert "answered: an exclusion constraint cannot be added NOT VALID" in section
    assert (
        '<a href="https://squawkhq.com/docs/constraint-missing-not-valid" '
        'rel="noopener noreferrer">constraint-missing-not-valid</a>'
    ) in page
    assert (
        "<details><summary><code>ADD CONSTRAINT allocations_no_overlap EXCLUDE USING gist (</code>"
        in page
    )
    assert 'href="files/lint.json"' in page


def test_a_finding_from_a_database_or_file_never_becomes_markup(tmp_path):
    run = lay_out(tmp_path)
    kept = seed_lint().as_json()
    kept["findings"][0] |= {"statement": SCRIPT, "first_line": SCRIPT, "note": SCRIPT}
    run.write_json("lint.json", kept)
    page = review_page(record_of(tmp_path))
    assert SCRIPT not in page and "<summary><code>&lt;script&gt;fetch(" in page

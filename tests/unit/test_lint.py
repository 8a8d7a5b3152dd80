"""Squawk on a bundle (the real `squawk` of the squawk-cli wheel, the repository's .squawk.toml):
each finding where it is, its rule's link, and what the rollout answers beside it; what the
author accepted with a reason; a reason missing is a manifest error; `bundle check` and the
approval show them. Findings never make a bundle not ready."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from rollout import cli, lint, report, steps
from rollout.authoring import check_bundle
from rollout.errors import BundleError
from rollout.lint import ACCEPTED, ANSWERED, WARNING, LintError, lint_bundle
from rollout.manifest import load_manifest
from rollout.migrations import MigrationBundle, load_bundle
from rollout.paths import PROJECT_ROOT
from tests.target_state import make_run

VERSION = "20251113203000"
FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "bundles"


def fixture(name: str) -> MigrationBundle:
    [folder] = FIXTURES.glob(f"*_{name}")
    return MigrationBundle(folder.name[:14], folder.name[15:], folder)


def found(bundle: MigrationBundle) -> list[tuple[str, int, str, str]]:
    return [(f.script, f.line, f.rule, f.status) for f in lint_bundle(bundle).findings]


def copy_of_seed(tmp_path):
    source = load_bundle(VERSION).path
    folder = tmp_path / source.name
    shutil.copytree(source, folder)
    return folder, MigrationBundle(VERSION, source.name[15:], folder)


def test_the_seed_up_gives_squawks_five_findings_each_with_our_answer_or_the_authors():
    result = lint_bundle(load_bundle(VERSION))
    up = [f for f in result.findings if f.script == "up.sql"]
    # What Squawk 2.70 really says on our up.sql: five findings, the issue's count.
    assert [(f.line, f.rule, f.status) for f in up] == [
        (8, "require-lock-timeout", ANSWERED),
        (8, "require-statement-timeout", ANSWERED),
        (215, "ban-drop-constraint", ACCEPTED),
        (216, "ban-drop-constraint", ACCEPTED),
        (217, "constraint-missing-not-valid", ANSWERED),
    ]
    by_rule = {f.rule: f for f in up}
    exclude = by_rule["constraint-missing-not-valid"]
    # Squawk's advice kept as it said it, and why it cannot be followed, beside it.
    assert exclude.help == "Use `NOT VALID` with a later `VALIDATE CONSTRAINT` call."
    assert exclude.first_line == "ADD CONSTRAINT allocations_no_overlap EXCLUDE USING gist ("
    assert "cannot be added NOT VALID" in exclude.note
    assert "The online apply is the answer" in exclude.note and "public.allocations" in exclude.note
    assert exclude.link == "https://squawkhq.com/docs/constraint-missing-not-valid"
    assert "lock retries" in by_rule["require-lock-timeout"].note
    assert "production's apply 3x the lock predicted" in by_rule["require-statement-timeout"].note
    assert by_rule["ban-drop-constraint"].note.startswith("allocations_resource_window_excl is")
    assert up[2].first_line == "DROP CONSTRAINT IF EXISTS allocations_resource_window_excl,"

    down = {f.rule: f for f in result.findings if f.script == "down.sql"}
    # The drop of the cache is answered by the manifest's export; a rollback's attempts set
    # their own statement_timeout (rollout.timeouts), so that finding is answered too.
    assert down["ban-drop-table"].status == ANSWERED and "export" in down["ban-drop-table"].note
    assert down["require-statement-timeout"].status == ANSWERED
    assert "a rollback 3x the lock budget" in down["require-statement-timeout"].note
    assert (result.count(ANSWERED), result.count(ACCEPTED), result.count(WARNING)) == (6, 2, 0)


def test_without_the_authors_acceptance_a_finding_stays_a_warning(tmp_path):
    folder, bundle = copy_of_seed(tmp_path)
    manifest = folder / "manifest.toml"
    manifest.write_text(manifest.read_text().split("\n[lint]")[0] + "\n")
    statuses = {(f.line, f.rule): f.status for f in lint_bundle(bundle).findings}
    assert statuses[(215, "ban-drop-constraint")] == WARNING
    assert statuses[(217, "constraint-missing-not-valid")] == ANSWERED

    # Without [online] the exclusion constraint's answer is the measured lock, not the online
    # apply (which that bundle does not allow).
    text = manifest.read_text()
    manifest.write_text(text[: text.index("[online]")])
    bundle = MigrationBundle(bundle.version, bundle.name, folder)  # its manifest read anew
    [exclude] = [
        f for f in lint_bundle(bundle).findings if f.rule == "constraint-missing-not-valid"
    ]
    assert "online" not in exclude.note and "measured on staging" in exclude.note


def test_an_accepted_rule_squawk_does_not_find_is_named_by_bundle_check(tmp_path, capsys):
    folder, _ = copy_of_seed(tmp_path)
    manifest = folder / "manifest.toml"
    manifest.write_text(
        manifest.read_text().replace(
            "accepted = [\n", 'accepted = [\n    { rule = "ban-drop-column", reason = "old" },\n'
        )
    )
    assert cli.main(["bundle", "check", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == (
        f"{folder.name}: manifest.toml [lint] accepts ban-drop-column, which Squawk no longer "
        "finds: remove it, so a later finding of it is not accepted unread"
    )


def test_an_accepted_rule_without_a_reason_is_refused_naming_the_rule(tmp_path):
    folder, bundle = copy_of_seed(tmp_path)
    manifest = folder / "manifest.toml"
    text = manifest.read_text().split("\n[lint]")[0]
    manifest.write_text(text + '\n[lint]\naccepted = [{ rule = "ban-drop-constraint" }]\n')
    with pytest.raises(BundleError, match=r"\[lint\] accepted ban-drop-constraint has no reason"):
        load_manifest(folder)
    assert any("ban-drop-constraint has no reason" in p for p in check_bundle(bundle))
    manifest.write_text(
        text + '\n[lint]\naccepted = [{ rule = "ban-drop-constraint", reason = "  " }]\n'
    )
    with pytest.raises(BundleError, match="ban-drop-constraint has no reason"):
        load_manifest(folder)
    manifest.write_text(text + '\n[lint]\naccepted = [{ rule = "Ban drop", reason = "x" }]\n')
    with pytest.raises(BundleError, match="'Ban drop' is not a Squawk rule name"):
        load_manifest(folder)


def test_bundle_check_prints_the_findings_and_stays_ready(capsys):
    assert cli.main(["bundle", "check", VERSION]) == 0
    out = capsys.readouterr().out.splitlines()
    name = load_bundle(VERSION).path.name
    assert out[0] == f"{name}: ready"
    assert out[1] == (
        f"{name}: Squawk (2.70.0): 8 finding(s) in up.sql and down.sql: 6 answered by how the "
        "rollout runs the script, 2 accepted in manifest.toml, 0 warning(s) to read"
    )
    assert len(out) == 2 + 8  # and no accepted rule that Squawk does not find
    [exclude] = [line for line in out if "constraint-missing-not-valid" in line]
    assert exclude.startswith(
        "  up.sql:217 constraint-missing-not-valid "
        "(https://squawkhq.com/docs/constraint-missing-not-valid): "
    )
    assert "-> answered: an exclusion constraint cannot be added NOT VALID" in exclude
    assert not [line for line in out if line.endswith("-> warning")]
    [down_timeout] = [line for line in out if line.startswith("  down.sql:52 require-statement")]
    assert "-> answered: every attempt of the apply and of the rollback" in down_timeout


@pytest.mark.parametrize(
    ("name", "rule", "line"),
    [
        ("allocations_created_at_index", "require-concurrent-index-creation", 6),
        ("bookings_idempotency_key_not_null", "adding-not-nullable-field", 6),
        ("bookings_party_size_bigint", "changing-column-type", 5),
    ],
)
def test_each_dangerous_fixture_gets_squawks_finding_answered_by_the_measured_lock(
    name, rule, line
):
    bundle = fixture(name)
    result = lint_bundle(bundle)
    [finding] = [f for f in result.findings if f.rule == rule and f.script == "up.sql"]
    assert finding.line == line and finding.status == ANSWERED
    assert finding.first_line.startswith(("CREATE INDEX", "ALTER TABLE public.bookings"))
    assert "measured on staging's rows" in finding.note and "lock-trace.json" in finding.note
    ups = {f.rule: f.status for f in result.findings if f.script == "up.sql"}
    assert ups == {rule: ANSWERED, "require-lock-timeout": ANSWERED,
                   "require-statement-timeout": ANSWERED}  # fmt: skip
    assert check_bundle(bundle) == []  # findings are warnings, never problems


def test_the_fixtures_downs_keep_what_the_rollout_does_not_answer_as_warnings():
    warnings = {
        name: sorted(f.rule for f in lint_bundle(fixture(name)).findings if f.status == WARNING)
        for name in ("bookings_idempotency_key_not_null", "bookings_party_size_bigint")
    }
    assert warnings == {
        "bookings_idempotency_key_not_null": ["ban-drop-not-null"],
        "bookings_party_size_bigint": ["prefer-bigint-over-int"],
    }


def test_preflights_lint_json_and_the_gate_text_show_the_findings(tmp_path):
    run, said = make_run({}, tmp_path)
    counts = steps.lint_bundle(run, run.bundle)
    assert counts == {ANSWERED: 6, ACCEPTED: 2, WARNING: 0}
    kept = json.loads((tmp_path / "run_a" / "lint.json").read_text())
    assert kept["squawk"] == "2.70.0" and len(kept["findings"]) == 8
    assert any(line.startswith("preflight: Squawk (2.70.0): 8 finding(s)") for line in said)

    facts = {
        "preflight": {"production": {"locked_rows": 1_000_000}}, "predicted_lock_s": 12.5,
        "apply_staging": {"lock_seconds": 1.2}, "validate_staging": {"expectations": 20, "catalog": 22},
        "capture_db_diff": {"drift_empty": True, "change": "23 added"},
        "run_assignment_tests": {"line": "12 passed"},
    }  # fmt: skip
    body = report.approval_body(run, facts, "http://x/rollout/runs/r/")
    lines = body.splitlines()
    start = lines.index(f"**Lint**: {kept['summary']} (lint.json):")
    findings = lines[start + 2 : start + 10]
    # Warnings first (the seed has none), then what the author accepted, then what the rollout
    # answers.
    assert findings[0].startswith("- `up.sql:215` [ban-drop-constraint]")
    assert "(accepted by the bundle's author: allocations_resource_window_excl is" in findings[0]
    assert "**warning**" not in body
    assert findings[-1].startswith("- `") and "(answered: " in findings[-1]
    [exclude] = [f for f in findings if "constraint-missing-not-valid" in f]
    assert "(answered: an exclusion constraint cannot be added NOT VALID" in exclude
    assert lint.gate_lines(None) == []


def test_a_missing_squawk_is_one_line_that_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LintError, match=r"squawk is not installed: install the project's") as exc:
        lint_bundle(load_bundle(VERSION))
    assert "\n" not in str(exc.value)

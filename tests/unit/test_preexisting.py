"""The rule that judges production after the apply against production before it (what is new or
worse is the migration's; what was there and is no worse is not), and how the gate's text and
the review page show a violation production already had. The database side (the suite before
the apply, the apply, the check after it) is tests/integration/test_preexisting.py."""

from __future__ import annotations

import json

from rollout.preexisting import judge, judgements_json, violation_line
from rollout.report import already_violated_lines
from rollout.review import review_page
from tests.unit.test_review import OUTBOX, SCRIPT, expectation, lay_out, record_of, text_of

IN_SET = {"kind": "expect_column_values_to_be_in_set"}


def outbox(unexpected: int | None, **facts) -> dict:
    """The outbox expectation's result as run_suite writes it, with `unexpected` wrong rows."""
    if unexpected is None:
        return expectation(OUTBOX, "capacity_outbox", success=False, observed={},
                           error="relation does not exist", **facts)  # fmt: skip
    observed = {
        "unexpected_count": unexpected,
        "partial_unexpected_list": ["x.unknown"] * unexpected,
    }
    return expectation(OUTBOX, "capacity_outbox", success=unexpected == 0, observed=observed, **facts)  # fmt: skip


def overlaps(rows: int) -> dict:
    return expectation("no two non-shadow allocations overlap", "allocations", success=rows == 0,
                       kind="unexpected_rows_expectation", observed=rows,
                       expected="no rows from its query")  # fmt: skip


def section(text: str, title: str, next_title: str) -> str:
    """The page's text from a step's title to the next step's, in the story."""
    start = text.index(title, text.index("The story"))
    return text[start : text.index(next_title, start)]


def verdicts(after: list[dict], before: list[dict] | None) -> list[str]:
    return [j.verdict for j in judge(after, before)]


def test_failed_before_and_no_worse_after_is_preexisting_else_the_migrations():
    assert verdicts([outbox(1)], [outbox(1)]) == ["pre-existing"]
    assert verdicts([outbox(1)], [outbox(3)]) == ["pre-existing"]  # fewer: someone fixed some
    assert verdicts([outbox(2)], [outbox(1)]) == ["worse"]
    assert verdicts([outbox(1)], [outbox(0)]) == ["new"]
    assert verdicts([outbox(0)], [outbox(5)]) == ["ok"]
    # The same for an expectation that counts its query's rows.
    assert verdicts([overlaps(2)], [overlaps(2)]) == ["pre-existing"]
    assert verdicts([overlaps(3)], [overlaps(2)]) == ["worse"]


def test_nothing_to_compare_with_is_judged_as_it_is():
    # Not checked before (a table the migration creates), or it could not run either side.
    assert verdicts([outbox(1)], []) == ["new"]
    assert verdicts([outbox(None)], [outbox(None)]) == ["new"]
    assert verdicts([outbox(1)], [outbox(None)]) == ["new"]
    # A row count has no "unexpected rows": never pre-existing.
    rows = expectation("allocations has as many rows as before the apply", "allocations",
                       success=False, kind="expect_table_row_count_to_equal", observed=2999,
                       expected="3,000 rows")  # fmt: skip
    assert verdicts([rows], [{**rows}]) == ["new"]


def test_the_judgement_says_whose_it_is():
    [kept] = judge([outbox(1)], [outbox(1)], at_gate=[outbox(1)])
    assert (kept.the_migrations, kept.at_gate) == (False, 1)
    assert (
        kept.line() == f"capacity_outbox: {OUTBOX} (1 unexpected, 1 before the apply: pre-existing)"
    )
    # More rows before the apply than the approver was shown: said, still not the migration's.
    [later] = judge([outbox(2)], [outbox(2)], at_gate=[outbox(0)])
    assert later.verdict == "pre-existing"
    assert later.line().endswith(
        "(2 unexpected, 2 before the apply: pre-existing; 0 when the approval was asked)"
    )
    [worse] = judge([outbox(2)], [outbox(1)])
    assert worse.the_migrations and "1 before the apply: new since" in worse.line()
    [new] = judge([outbox(1)], [outbox(0)])
    assert new.line() == f"capacity_outbox: {OUTBOX} (1 unexpected; passed before the apply)"


def test_the_gate_names_what_production_already_violates():
    found = {"expectations": "3/4", "absent_tables": [], "violations": [
        violation_line({"table": "capacity_outbox", "name": OUTBOX, "unexpected": 1,
                        "observed": {"partial_unexpected_list": ["x.unknown"]}})]}  # fmt: skip
    text = "\n".join(already_violated_lines({"production_data": found}))
    assert "**Production already violates 1 expectation(s)** before the migration" in text
    assert f"- capacity_outbox: {OUTBOX}: 1 row(s) (x.unknown)" in text
    clean = {"expectations": "4/4", "absent_tables": [], "violations": []}
    assert "nothing already violated" in already_violated_lines({"production_data": clean})[0]
    assert already_violated_lines({"apply_mode": "locking"}) == []  # not checked: not said


def test_the_review_page_shows_the_preexisting_violation_at_the_gate_and_after_the_apply(tmp_path):
    run = lay_out(tmp_path)  # a succeeded run...
    # ...whose production had an unknown outbox event before it: the checks before the
    # approval and before the apply found it (checks-before.json as check_before writes it).
    violation = {"table": "capacity_outbox", "name": OUTBOX, "expected": "event_type in {…}",
                 "unexpected": 1, "observed": {"unexpected_count": 1,
                                               "partial_unexpected_list": [SCRIPT]}, "error": None}  # fmt: skip
    for folder, at in (("checks-before-approval", "10:02"), ("checks-before-apply", "10:05")):
        run.write_json(f"production/{folder}/checks-before.json", {
            "taken_at": f"2026-11-29T{at}:00+00:00", "suite": "post_migration",
            "expectations": "3/4", "absent_tables": ["booking_confirmation_results"],
            "violations": [violation]})  # fmt: skip
    request = json.loads((tmp_path / "approval-request.json").read_text())
    gate = {"expectations": "3/4", "absent_tables": [], "violations": [violation_line(violation)]}
    request["body"] += "\n".join(already_violated_lines({"production_data": gate}))
    run.write_json("approval-request.json", request)
    # Production's validation after the apply: the outbox expectation failed, judged as before.
    after = outbox(1)
    judged = judge([after], [outbox(1)], at_gate=[outbox(1)])
    report = json.loads((tmp_path / "production/validation/validation-report.json").read_text())
    report |= {"judged": judgements_json(judged), "preexisting": [j.line() for j in judged]}
    run.write_json("production/validation/validation-report.json", report)

    page = review_page(record_of(tmp_path))
    text = text_of(page)
    verdict = text[text.index("Succeeded") : text.index("The story")]
    assert "production: 1 violation(s) already there before the apply, no worse after" in verdict
    check = section(text, "Lock budget and window", "Approval")
    assert "What production already violates, shown to the approver" in check
    assert f"{OUTBOX} capacity_outbox 1 unexpected: {SCRIPT}" in check
    assert (
        "Not there before the migration (judged after it as they are): booking_confirmation_results"
        in check
    )
    approval = text[text.index("What the approver was shown") :]
    assert "Production already violates 1 expectation(s) before the migration" in approval
    validated = section(text, "Validation on production", "Production performance, after")
    assert "0 violation(s) the migration's (new or worse), 1 pre-existing and no worse" in validated
    assert f"pre-existing {OUTBOX} capacity_outbox 1 1 1" in validated  # at the gate, before, after
    baseline = section(text, "Production performance, before", "Apply on production")
    assert "Checked 2026-11-29 10:05:00 UTC: 1 expectation(s) already violated" in baseline
    assert SCRIPT not in page and "&lt;script&gt;" in page  # a database value never markup

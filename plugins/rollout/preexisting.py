"""What production already violated before the apply, and the rule that judges the checks after
the apply against it: production's checks judge what the migration did, not what was there.

The bundle's post-migration suite runs on production before the apply too (the same
expectations on the same data, without Data Docs): once before the approval, so the gate shows
what production already violates, and once right before the apply, beside the performance
baseline, as the "before" the check after the apply compares with (production is live: the
closer to the apply, the less the application's own writes stand between the two). A table the
migration creates is not there before: its expectations are judged as they are after.

Per expectation, after the apply:
- passed: ok;
- failed, and failed before with as many unexpected rows or more: pre-existing, not a failure
  (the reviewer accepted it on the gate; it is reported, never a reason to roll back);
- failed, and passed before, or more unexpected rows than before: the migration's (new, worse);
- failed, with nothing to compare (not run before, could not run, no count): the migration's.
A violation the application writes between the "before" and the check after (an unknown outbox
event type, say) counts as worse: from the rows alone nobody can tell the application's old code
from the migration's new function called after the apply, so the rule errs towards the check
failing, and its message names the rows that are new since the "before" for a person to judge.
Catalog checks and the apply's own row effects are about the migration itself: always absolute.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rollout import db
from rollout.artifacts import ArtifactDir, as_artifact_dir
from rollout.validation import load_suite, run_suite, suite_path

PHASE = "post_migration"  # the suite that judges production after the apply
# The run's folders (under production/) of the two checks before the apply.
BEFORE_APPROVAL = "checks-before-approval"
BEFORE_APPLY = "checks-before-apply"
SUMMARY = "checks-before.json"

OK, PRE_EXISTING, NEW, WORSE = "ok", "pre-existing", "new", "worse"


def unexpected_count(detail: dict[str, Any]) -> int | None:
    """How many rows an expectation found wrong (validation-<suite>.json's entry), or None when
    it has no such count (it could not run; a row-count expectation counts rows, not errors)."""
    if detail.get("error"):
        return None
    observed = detail.get("observed")
    if isinstance(observed, dict) and isinstance(observed.get("unexpected_count"), int):
        return observed["unexpected_count"]
    if detail.get("expectation") == "unexpected_rows_expectation" and isinstance(observed, int):
        return observed
    return 0 if detail.get("success") else None


def expectation_key(detail: dict[str, Any]) -> tuple:
    """One expectation of a suite, the same before and after the apply."""
    return (detail.get("table"), detail.get("expectation"), detail.get("description"),
            detail.get("expected"))  # fmt: skip


@dataclass(frozen=True)
class Judgement:
    """One expectation after the apply, against production before it."""

    table: str
    name: str
    expected: str
    verdict: str  # ok, pre-existing, new, worse
    after: int | None  # unexpected rows after the apply (None: no count)
    before: int | None  # ... right before the apply (None: not run there, or no count)
    at_gate: int | None = None  # ... when the approver was asked (None: not checked then)
    observed: Any = None  # what GX observed after the apply

    @property
    def the_migrations(self) -> bool:
        return self.verdict in (NEW, WORSE)

    def line(self) -> str:
        label = f"{self.table}: {self.name}"
        rows = f"{self.after:,} unexpected" if self.after is not None else "failed"
        if self.verdict == PRE_EXISTING:
            # More than the approver was shown: the application wrote them after the gate.
            unseen = self.at_gate is not None and self.at_gate < (self.before or 0)
            shown = f"; {self.at_gate:,} when the approval was asked" if unseen else ""
            return f"{label} ({rows}, {self.before:,} before the apply: pre-existing{shown})"
        if self.verdict == WORSE:
            return f"{label} ({rows}, {self.before:,} before the apply: new since)"
        if self.before is None:
            return f"{label} ({rows}; not checked before the apply)"
        return f"{label} ({rows}; passed before the apply)"


def judge(after: list[dict[str, Any]], before: list[dict[str, Any]] | None,
          at_gate: list[dict[str, Any]] | None = None) -> list[Judgement]:  # fmt: skip
    """Every expectation after the apply, judged against the same expectation before it."""
    earlier = {expectation_key(d): d for d in before or []}
    gate = {expectation_key(d): d for d in at_gate or []}
    judged = []
    for detail in after:
        key = expectation_key(detail)
        now = unexpected_count(detail)
        then = unexpected_count(earlier[key]) if key in earlier else None
        if detail.get("success"):
            verdict = OK
        elif now is None or then is None or then == 0:
            verdict = NEW
        else:
            verdict = PRE_EXISTING if now <= then else WORSE
        judged.append(
            Judgement(
                table=str(detail.get("table")),
                name=str(detail.get("description") or detail.get("expectation")),
                expected=str(detail.get("expected") or ""),
                verdict=verdict,
                after=now,
                before=then,
                at_gate=unexpected_count(gate[key]) if key in gate else None,
                observed=detail.get("observed"),
            )
        )
    return judged


def existing_tables(dsn: str, tables: list[str]) -> list[str]:
    """The suite's tables the target has now (the migration's new tables are not there yet)."""
    with db.connect(dsn) as conn:
        return [t for t in tables if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0]]


def check_before(dsn: str, suites: str | Path, artifacts: ArtifactDir | Path | str) -> dict:
    """The post-migration suite on a target before the apply (read-only, no Data Docs): what it
    already violates. Writes validation-post_migration.json and checks-before.json; never
    raises for a violation, only when the checks cannot run."""
    out = as_artifact_dir(artifacts)
    path = suite_path(suites, PHASE)
    tables = list(load_suite(path)["tables"])
    present = existing_tables(dsn, tables)
    absent = [t for t in tables if t not in present]
    taken_at = dt.datetime.now(dt.UTC).isoformat()
    summary = run_suite(dsn, path, out, tables=present, data_docs=False) if present else None
    details = read_details(out) if summary else []
    violations = [
        {"table": d["table"], "name": d.get("description") or d.get("expectation"),
         "expected": d.get("expected"), "unexpected": unexpected_count(d),
         "observed": d.get("observed"), "error": d.get("error")}
        for d in details if not d.get("success")
    ]  # fmt: skip
    facts = {
        "taken_at": taken_at,
        "suite": PHASE,
        "expectations": f"{summary.successful}/{summary.evaluated}" if summary else "0/0",
        "absent_tables": absent,
        "violations": violations,
    }
    out.write_json(SUMMARY, facts)
    return facts


def read_details(folder: ArtifactDir, suite: str = PHASE) -> list[dict[str, Any]]:
    """Each expectation's result a suite run left in `folder` (validation-<suite>.json); empty
    when it has none."""
    import json

    path = folder.path(f"validation-{suite}.json")
    if not path.exists():
        return []
    return json.loads(path.read_text()).get("expectations") or []


def violation_line(violation: dict[str, Any]) -> str:
    """One pre-existing violation in words, for the gate's text and the logs."""
    count = violation.get("unexpected")
    found = f"{count:,} row(s)" if isinstance(count, int) else "could not run"
    if violation.get("error"):
        found += f": {violation['error']}"
    else:
        values = (
            (violation.get("observed") or {}) if isinstance(violation.get("observed"), dict) else {}
        )
        shown = [str(v) for v in (values.get("partial_unexpected_list") or [])[:5]]
        if shown:
            found += f" ({', '.join(shown)})"
    return f"{violation['table']}: {violation['name']}: {found}"


def judgements_json(judged: list[Judgement]) -> list[dict[str, Any]]:
    return [asdict(j) for j in judged]

"""db-diff: what differs between two schema snapshots, written for a person to review.

Stable from run to run: objects are keyed by kind and name, sorted, and compared by their
normalised definitions (no OIDs, dump keys or timestamps; see sql/catalog/schema_snapshot.sql).
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psycopg

from rollout.artifacts import ArtifactDir, as_artifact_dir
from rollout.schema import Snapshot, snapshot_schema

Key = tuple[str, str]


@dataclass(frozen=True)
class SchemaDiff:
    added: dict[Key, str]
    removed: dict[Key, str]
    changed: dict[Key, tuple[str, str]]

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def summary(self) -> str:
        """One line: counts, e.g. '21 added, 3 removed, 1 changed'."""
        if self.is_empty:
            return "no differences"
        return f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed"

    def counts_by_kind(self) -> dict[str, dict[str, int]]:
        counts: dict[str, Counter] = {}
        for label, keys in (
            ("added", self.added),
            ("removed", self.removed),
            ("changed", self.changed),
        ):
            for kind, _ in keys:
                counts.setdefault(kind, Counter())[label] += 1
        return {kind: dict(counter) for kind, counter in sorted(counts.items())}

    def to_json(self, before_label: str, after_label: str) -> dict:
        """The same facts as `render`, for a page to lay out: each object with its definition,
        each changed one with its before, after and a unified diff of the two."""
        return {
            "before": before_label,
            "after": after_label,
            "summary": self.summary(),
            "counts": {
                "added": len(self.added),
                "removed": len(self.removed),
                "changed": len(self.changed),
            },
            "by_kind": self.counts_by_kind(),
            "added": [
                {"kind": kind, "name": name, "definition": definition}
                for (kind, name), definition in sorted(self.added.items())
            ],
            "removed": [
                {"kind": kind, "name": name, "definition": definition}
                for (kind, name), definition in sorted(self.removed.items())
            ],
            "changed": [
                {
                    "kind": kind,
                    "name": name,
                    "before": before,
                    "after": after,
                    "diff": _unified(before, after, before_label, after_label),
                }
                for (kind, name), (before, after) in sorted(self.changed.items())
            ],
        }

    def render(self, before_label: str, after_label: str) -> str:
        lines = [f"db-diff: {before_label} -> {after_label}", f"objects: {self.summary()}"]
        for kind, counter in self.counts_by_kind().items():
            parts = [f"{counter[k]} {k}" for k in ("added", "removed", "changed") if counter.get(k)]
            lines.append(f"  {kind:<11} {', '.join(parts)}")
        for title, sign, items in (("added", "+", self.added), ("removed", "-", self.removed)):
            if items:
                lines += ["", f"== {title} =="]
                for (kind, name), definition in sorted(items.items()):
                    lines.append(f"{sign} {kind} {name}")
                    lines += [f"    {line}" for line in definition.splitlines()]
        if self.changed:
            lines += ["", "== changed =="]
            for (kind, name), (before, after) in sorted(self.changed.items()):
                lines.append(f"~ {kind} {name}")
                lines += [
                    f"    {line}" for line in _unified(before, after, before_label, after_label)
                ]
        return "\n".join(lines) + "\n"


def diff_snapshots(before: Snapshot, after: Snapshot) -> SchemaDiff:
    return SchemaDiff(
        added={k: after[k] for k in after.keys() - before.keys()},
        removed={k: before[k] for k in before.keys() - after.keys()},
        changed={
            k: (before[k], after[k]) for k in before.keys() & after.keys() if before[k] != after[k]
        },
    )


def save_snapshot(snapshot: Snapshot, artifacts: ArtifactDir | Path | str, name: str) -> None:
    """Keep a snapshot as JSON (the "before" of a later diff or rollback check)."""
    rows = [{"kind": k, "name": n, "definition": d} for (k, n), d in sorted(snapshot.items())]
    as_artifact_dir(artifacts).write_json(name, rows)


def load_snapshot(path: Path | str) -> Snapshot:
    return load_snapshot_text(Path(path).read_text(encoding="utf-8"))


def load_snapshot_text(text: str) -> Snapshot:
    """A snapshot saved by save_snapshot, from its JSON text (read from any storage)."""
    return {(row["kind"], row["name"]): row["definition"] for row in json.loads(text)}


def capture_db_diff(
    before: Snapshot | psycopg.Connection,
    after: Snapshot | psycopg.Connection,
    artifacts: ArtifactDir | Path | str,
    *,
    before_label: str,
    after_label: str,
    filename: str = "db-diff.txt",
) -> SchemaDiff:
    """Diff two databases (or saved snapshots) and write the readable report, and beside it
    the same as JSON (db-diff.txt, db-diff.json) for the review page."""
    snapshots = [s if isinstance(s, dict) else snapshot_schema(s) for s in (before, after)]
    diff = diff_snapshots(*snapshots)
    write_diff(diff, as_artifact_dir(artifacts), filename, before_label, after_label)
    return diff


def write_diff(
    diff: SchemaDiff, artifacts: ArtifactDir, filename: str, before_label: str, after_label: str
) -> None:
    """`filename` (a .txt, for a person) and the same name in .json (for the review page)."""
    artifacts.write_text(filename, diff.render(before_label, after_label))
    artifacts.write_json(
        filename.removesuffix(".txt") + ".json", diff.to_json(before_label, after_label)
    )


def _unified(before: str, after: str, before_label: str, after_label: str) -> list[str]:
    """A changed object's definition, before against after, as the report and the JSON show it."""
    return list(
        difflib.unified_diff(
            before.splitlines(), after.splitlines(), before_label, after_label, lineterm="", n=2
        )
    )

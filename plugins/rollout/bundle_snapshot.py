"""What exactly a run applies: the bundle as its preflight read it, kept in the run's artifacts.

Preflight copies every file of the bundle into `bundle/<folder>/` with `bundle.json` (version,
name, checksum). From then on the run's bundle is that copy: staging runs it, the approver is
shown its checksum, production applies it, a rollback runs its down.sql. The folder on disk is
compared with it before a step touches a target with it, so that whoever edited the folder
learns the edit is not part of this run (a new run rolls it out, validated and approved).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

from rollout.artifacts import ArtifactDir
from rollout.errors import BundleError
from rollout.migrations import MigrationBundle, checksum_of, read_files

SNAPSHOT_DIR = "bundle"
RECORD = "bundle.json"
# Kept when a step finds the folder changed: the review page shows it in red.
MISMATCH = "bundle-mismatch.json"


class BundleChanged(BundleError):
    """The bundle folder on disk is not the bundle this run read at preflight."""


def take(bundle: MigrationBundle, artifacts: ArtifactDir) -> MigrationBundle:
    """Copy the bundle's files into the run's artifacts, read once: the copy's checksum is that
    of the bytes preflight read, whatever happens to the folder afterwards."""
    files = read_files(bundle.path)
    checksum = checksum_of(files)
    for name, data in files.items():
        artifacts.write_bytes(f"{SNAPSHOT_DIR}/{bundle.path.name}/{name}", data)
    artifacts.write_json(
        RECORD,
        {"version": bundle.version, "name": bundle.name, "folder": bundle.path.name,
         "checksum": checksum, "source": str(bundle.path), "files": list(files),
         "taken_at": dt.datetime.now(dt.UTC).isoformat()},
    )  # fmt: skip
    snapshot = load(artifacts)
    assert snapshot is not None
    return snapshot


def load(artifacts: ArtifactDir) -> MigrationBundle | None:
    """The run's bundle as preflight kept it, or None before preflight. A copy whose files no
    longer give the recorded checksum is refused: nothing runs from altered artifacts."""
    record_path = artifacts.path(RECORD)
    if not record_path.exists():
        return None
    record = json.loads(record_path.read_text())
    folder = artifacts.path(f"{SNAPSHOT_DIR}/{record['folder']}")
    if not isinstance(folder, Path):  # object storage: the scripts are run from a local copy
        folder = _local_copy(folder, record)
    snapshot = MigrationBundle(record["version"], record["name"], folder)
    if snapshot.checksum != record["checksum"]:
        raise BundleChanged(
            f"the run's copy of {record['folder']} ({folder}) has checksum "
            f"{snapshot.checksum[:12]}, not the {record['checksum'][:12]} its preflight read: "
            "the run's artifacts were altered. Nothing was touched; trigger a new run"
        )
    return snapshot


def _local_copy(folder: Any, record: dict[str, Any]) -> Path:
    local = Path(tempfile.mkdtemp(prefix="rollout-bundle-")) / record["folder"]
    for name in record["files"]:
        target = local / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((folder / name).read_bytes())
    return local


def require_unchanged(
    snapshot: MigrationBundle | None, on_disk: MigrationBundle, artifacts: ArtifactDir, step: str
) -> None:
    """Refuse `step` when the folder on disk no longer gives the checksum preflight read (an
    edit after preflight: staging never ran it and nobody approved it). The mismatch is kept
    (bundle-mismatch.json) for the summary and the review page. Nothing before preflight."""
    if snapshot is None:
        return
    now = checksum_of(read_files(on_disk.path))  # read again: the folder may change any time
    if now == snapshot.checksum:
        return
    artifacts.write_json(
        MISMATCH,
        {"step": step, "approved": snapshot.checksum, "on_disk": now, "folder": str(on_disk.path),
         "at": dt.datetime.now(dt.UTC).isoformat()},
    )  # fmt: skip
    raise BundleChanged(
        f"{step} refused: the bundle {on_disk.path.name} on disk has checksum {now[:12]}, not "
        f"{snapshot.checksum[:12]}, the one this run's preflight read, staging ran and the "
        "approval is for; it was edited after preflight. Nothing was touched. Trigger a new run "
        "to roll out the edited bundle (or restore the folder as it was to go on with this one)"
    )


def mismatch(artifacts: ArtifactDir) -> dict[str, Any] | None:
    """The mismatch a step found, if one ever did."""
    path = artifacts.path(MISMATCH)
    return json.loads(path.read_text()) if path.exists() else None

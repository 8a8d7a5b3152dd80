"""The one artifact writer: every file a step produces goes through an ArtifactDir.

The root is a local `pathlib.Path` here; anything path-like with the same methods
(Airflow's `ObjectStoragePath`, for S3 or GCS) works the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollout.secrets import scrub


@dataclass
class ArtifactDir:
    root: Any  # pathlib.Path or airflow.sdk.ObjectStoragePath
    written: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Any:
        return self.root / name

    def write_text(self, name: str, text: str) -> Any:
        return self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str, data: Any) -> Any:
        return self.write_text(name, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def write_bytes(self, name: str, data: bytes) -> Any:
        target = self.path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(scrub(data))  # no password this process knows is ever written
        self.written.append(name)
        return target

    def subdir(self, name: str) -> ArtifactDir:
        return ArtifactDir(self.root / name)


def as_artifact_dir(where: ArtifactDir | Path | str) -> ArtifactDir:
    return where if isinstance(where, ArtifactDir) else ArtifactDir(Path(where))


def publish_tree(local: Path, dest: ArtifactDir) -> list[str]:
    """Copy a local folder's files into dest (any ArtifactDir root, object storage included):
    tools that can only write local files (GX, pytest) write to a temp folder first."""
    names = []
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        name = path.relative_to(local).as_posix()
        dest.write_bytes(name, path.read_bytes())
        names.append(name)
    return names


def list_tree(root: Any) -> list[str]:
    """Every file under an artifact root, as relative names, sorted."""
    found = []

    def walk(folder: Any, prefix: str) -> None:
        for child in sorted(folder.iterdir(), key=lambda p: p.name):
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            else:
                found.append(f"{prefix}{child.name}")

    if root.exists():
        walk(root, "")
    return found

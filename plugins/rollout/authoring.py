"""The tools a bundle's author uses: `rollout bundle check` (is this bundle complete and sound?)
and `rollout bundle import` (a bundle from a Supabase CLI migration file).

An imported bundle is a scaffold: the up is the file as written (wrapped in one transaction
where it is not), and the down, the checks and the manifest's answers are left for the author,
each marked `TODO(rollout)`. A bundle with such a mark is refused (by `bundle check`, and by a
run's parameters) until the author has completed it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from rollout.errors import BundleError, RolloutError
from rollout.lint import finding_lines, lint_bundle
from rollout.manifest import MANIFEST_NAME
from rollout.migrations import LOCK_PHASE_MARKER, MigrationBundle
from rollout.paths import MIGRATIONS_DIR, PROJECT_ROOT, SQL_DIR, sql_text
from rollout.supabase import FILE_NAME, split_statements

TODO = "TODO(rollout)"
SCAFFOLD_DIR = SQL_DIR / "scaffold"
_BUNDLE_DIR = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)$")


def check_bundle(bundle: MigrationBundle) -> list[str]:
    """What is missing or wrong in a bundle, each said as what to fix; [] when it is ready."""
    folder = bundle.path
    problems: list[str] = []
    if not _BUNDLE_DIR.match(folder.name):
        problems.append(f"rename the folder {folder.name} to <14-digit version>_<lower_case_name>")
    try:
        manifest = bundle.manifest
    except BundleError as exc:
        return [*problems, str(exc)]
    for direction in ("up", "down"):
        try:
            bundle.body(direction)
        except (BundleError, OSError) as exc:
            problems.append(str(exc))
    for check in ("verify_up", "verify_down"):
        if not bundle.check_path(check).is_file():
            problems.append(
                f"write checks/{check}.sql: it raises unless the database is in the "
                f"{check.removeprefix('verify_')} state"
            )
    for direction in ("up", "down"):
        path = bundle.path / f"{direction}.sql"
        has_marker = path.is_file() and LOCK_PHASE_MARKER in sql_text(path)
        if manifest.lock_tables and not has_marker:
            problems.append(
                f"{direction}.sql: put a line starting `{LOCK_PHASE_MARKER}` before the statements "
                f"that lock {', '.join(manifest.lock_tables)} (the lock phase the rollout times)"
            )
        if has_marker and not manifest.lock_tables:
            problems.append(
                f"{direction}.sql has a lock phase: name the tables it locks in manifest.toml "
                "lock_tables (they size the lock's prediction)"
            )
    for name in manifest.preflight_checks:
        if not (folder / name).is_file():
            problems.append(f"manifest.toml names the preflight check {name}: write it")
    if manifest.application_tests and not (PROJECT_ROOT / manifest.application_tests).is_dir():
        problems.append(
            f"manifest.toml names application_tests {manifest.application_tests}: no such folder "
            "in the project"
        )
    if not (bundle.expectations_dir / "post_migration.json").is_file():
        problems.append(
            f"write the post-migration expectation suite: {_shown(bundle.expectations_dir)}"
            "/post_migration.json (or name an existing folder in manifest.toml expectations)"
        )
    problems += _expectation_problems(bundle.expectations_dir)
    if manifest.supabase and not (folder / manifest.supabase.source).is_file():
        problems.append(f"manifest.toml [supabase] source {manifest.supabase.source} is missing")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        for line in path.read_text("utf-8", "replace").splitlines():
            if TODO in line:
                what = line.split(TODO, 1)[1].strip(" :")
                problems.append(f"finish {path.relative_to(folder).as_posix()}: {what}")
    return problems


def lint_lines(bundle: MigrationBundle) -> list[str]:
    """Squawk's findings as `bundle check` prints them: how many, how many the rollout answers,
    then each with its rule's link and note. Warnings to read, never a problem that makes the
    bundle not ready; nothing when the manifest itself is broken (check_bundle says so)."""
    try:
        report = lint_bundle(bundle).as_json()
    except BundleError:
        return []
    stale = [
        f"{bundle.path.name}: manifest.toml [lint] accepts {rule}, which Squawk no longer finds: "
        "remove it, so a later finding of it is not accepted unread"
        for rule in report["unmatched_accepted"]
    ]
    return [f"{bundle.path.name}: {report['summary']}", *finding_lines(report), *stale]


def _expectation_problems(folder: Path) -> list[str]:
    """The suites and catalog checks as a run loads them (rollout.validation, rollout.catalog):
    what would fail there, before a single expectation is evaluated."""
    from rollout.validation import suite_problems

    shown = _shown(folder)
    problems = [f"{shown}/{problem}" for problem in suite_problems(folder)]
    for path in sorted(folder.glob("catalog_*.json")):
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            loaded = exc
        if not isinstance(loaded, dict):
            problems.append(
                f"{shown}/{path.name} is not a JSON object of catalog checks ({loaded}): fix it "
                "or remove it"
            )
    return problems


def require_ready(bundle: MigrationBundle) -> None:
    """BundleError naming what to fix, unless the bundle is complete."""
    problems = check_bundle(bundle)
    if problems:
        raise BundleError(
            f"the bundle {bundle.path.name} is not ready: "
            + "; ".join(problems)
            + f" (`rollout bundle check {bundle.version}` lists it all)"
        )


def _shown(path: Path) -> str:
    try:
        return path.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return str(path)


def import_supabase(source: Path, into: Path = MIGRATIONS_DIR) -> MigrationBundle:
    """A bundle scaffold from `supabase/migrations/<version>_<name>.sql`: the file kept as
    written (its statements go in Supabase's history as the CLI would write them), up.sql the
    same wrapped in one transaction where it is not, and a down, checks and manifest for the
    author to complete."""
    match = FILE_NAME.match(source.name)
    if not source.is_file() or not match:
        raise RolloutError(
            f"{source}: not a Supabase migration file (supabase/migrations/<version>_<name>.sql)"
        )
    version, name = match["version"], match["name"]
    if not re.fullmatch(r"\d{14}", version):
        raise RolloutError(f"{source.name}: bundles need a 14-digit version, not {version!r}")
    folder_name = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "migration"
    folder = into / f"{version}_{folder_name}"
    if folder.exists() or any(p.name.startswith(f"{version}_") for p in into.glob("*")):
        raise RolloutError(f"a bundle with version {version} exists already under {into}")
    text = source.read_text("utf-8")
    statements = split_statements(text)
    folder.mkdir(parents=True)
    try:
        shutil.copyfile(source, folder / "supabase.sql")
        wrapped = (
            len(statements) >= 2
            and statements[0].upper() in ("BEGIN", "BEGIN TRANSACTION", "START TRANSACTION")
            and statements[-1].upper() in ("COMMIT", "END")
        )
        up = text if wrapped else _fill("up.sql", file=source.name, body=text.rstrip() + "\n")
        (folder / "up.sql").write_text(up)
        (folder / "down.sql").write_text(_fill("down.sql", file=source.name))
        (folder / "checks").mkdir()
        for check in ("verify_up", "verify_down"):
            (folder / "checks" / f"{check}.sql").write_text(_fill(f"{check}.sql"))
        (folder / MANIFEST_NAME).write_text(
            _fill("manifest.toml", version=version, name=name, file=source.name)
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # never half a scaffold
        raise
    return MigrationBundle(version, folder_name, folder)


def _fill(template: str, **values: str) -> str:
    text = sql_text(SCAFFOLD_DIR / template)
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text

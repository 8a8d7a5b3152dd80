"""Where the project's files are: the one place that knows the layout."""

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("ROLLOUT_PROJECT_ROOT", Path(__file__).resolve().parents[2]))
SQL_DIR = PROJECT_ROOT / "sql"
BASELINE_DIR = SQL_DIR / "baseline"
# Bundles: sql/migrations, or another folder (ROLLOUT_MIGRATIONS_DIR: a team's own repository
# of bundles, or the end-to-end tests' copies).
MIGRATIONS_DIR = Path(os.environ.get("ROLLOUT_MIGRATIONS_DIR", SQL_DIR / "migrations"))
SEED_DIR = SQL_DIR / "seed"
CATALOG_DIR = SQL_DIR / "catalog"
PROBES_DIR = SQL_DIR / "probes"
# Local state (embedded clusters, artifacts of local runs); git-ignored.
STATE_DIR = Path(os.environ.get("ROLLOUT_STATE_DIR", PROJECT_ROOT / ".rollout"))


def sql_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")

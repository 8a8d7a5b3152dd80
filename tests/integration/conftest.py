"""What the step-level integration tests share: a seeded staging and production."""

from __future__ import annotations

import datetime as dt

import pytest

from rollout import db
from rollout.run import TARGETS
from rollout.seed import seed_database


@pytest.fixture
def targets(make_database) -> dict[str, str]:
    """{"staging": dsn, "production": dsn}: two seeded databases of the same data."""
    dsns = {}
    for name in TARGETS:
        dsns[name] = make_database()
        with db.connect(dsns[name]) as conn:
            seed_database(conn, 2000, seed=5, anchor=dt.date(2026, 12, 1))
    return dsns

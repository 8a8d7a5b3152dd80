"""The assignment suite's target: ROLLOUT_ASSIGNMENT_DSN (how the DAG points it at staging),
or, inside the project's own test run, a fresh migrated database per server.

Everything the suite writes belongs to synthetic tenants it creates and removes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from rollout import db
from rollout.dsn import check_dsn
from rollout.migrations import apply_up, load_bundle
from tests.factories import Tenant, make_tenant

SYNTHETIC_PREFIX = "assignment-suite-"


if os.environ.get("ROLLOUT_ASSIGNMENT_DSN"):

    @pytest.fixture(scope="session")
    def target_dsn() -> str:
        return check_dsn(os.environ["ROLLOUT_ASSIGNMENT_DSN"], "ROLLOUT_ASSIGNMENT_DSN")

else:  # the project's own test run: tests/conftest.py provides databases on every server

    @pytest.fixture(scope="session")
    def target_dsn(make_database: Callable[..., str]) -> str:
        dsn = make_database()
        with db.connect(dsn) as conn:
            apply_up(conn, load_bundle())
        return dsn


@pytest.fixture
def new_tenant(target_dsn: str) -> Iterator[Callable[[], Tenant]]:
    """new_tenant() -> a synthetic restaurant with four tables; removed after the test."""
    made: list[Tenant] = []

    def make() -> Tenant:
        with db.connect(target_dsn) as conn:
            tenant = make_tenant(conn, slug_prefix=f"{SYNTHETIC_PREFIX}{uuid.uuid4().hex[:6]}-")
        made.append(tenant)
        return tenant

    yield make
    with db.connect(target_dsn) as conn, conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '30s'")  # fail loudly rather than wait forever
        for tenant in made:
            # The outbox has no foreign key to restaurants; everything else cascades.
            conn.execute(
                "DELETE FROM capacity_outbox WHERE restaurant_id = %s", (tenant.restaurant_id,)
            )
            conn.execute("DELETE FROM restaurants WHERE id = %s", (tenant.restaurant_id,))

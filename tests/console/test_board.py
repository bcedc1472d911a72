"""The dashboard's figures read from the console's own tables (real PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from services import service_migrations
from services.console.board import dashboard
from services.console.visibility import Viewer
from services.policy import Policy
from shared.database import Connection, connect
from shared.privileges import provision, role_url, service_role
from shared.settings import Settings
from tests.support.policies import parsed, shipped

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
OPERATOR = Viewer("ops", "Ops", "operator", None)


@pytest_asyncio.fixture
async def console(settings: Settings) -> AsyncIterator[Connection]:
    """The console's schema, migrated, as the console's own role sees it."""
    owner = await connect(settings.require_database_url())
    try:
        await provision(owner, "console", service_migrations("console"))
    finally:
        await owner.close()
    own = role_url(settings.require_database_url(), service_role("console"))
    conn = await connect(own, schema="console")
    try:
        yield conn
    finally:
        await conn.close()


async def _resolved_by(conn: Connection, agent: str, number: int, days_ago: int) -> None:
    at = NOW - timedelta(days=days_ago)
    await conn.execute(
        "INSERT INTO tickets (ticket_id, number, status, priority, received_at, updated_at, "
        "resolved_by, resolved_at, satisfaction) "
        "VALUES (gen_random_uuid(), $1, 'resolved', 'normal', $2, $2, $3, $2, 5)",
        f"REQ-2026-{number:06d}",
        at,
        agent,
    )


def _reviewing(policy: Policy, period: timedelta) -> Policy:
    assert policy.sla is not None
    sla = policy.sla.model_copy(update={"review_period": period})
    return policy.model_copy(update={"sla": sla})


@pytest.mark.asyncio
async def test_the_agents_review_covers_the_policys_review_period(console: Connection) -> None:
    await console.execute(
        "INSERT INTO agents (agent_id, name, role, groups, capacity, on_shift, updated_at) "
        "VALUES ('li.na', 'Li Na', 'agent', '{front-line}', 5, true, $1)",
        NOW,
    )
    for number, days_ago in enumerate((2, 10, 40), start=1):
        await _resolved_by(console, "li.na", number, days_ago)
    policy = parsed(shipped())

    monthly = await dashboard(console, OPERATOR, policy, NOW)
    weekly = await dashboard(console, OPERATOR, _reviewing(policy, timedelta(days=7)), NOW)

    assert monthly.reviews is not None and weekly.reviews is not None
    assert [(r.agent_id, r.handled) for r in monthly.reviews] == [("li.na", 2)], "30 days"
    assert [(r.agent_id, r.handled) for r in weekly.reviews] == [("li.na", 1)], "7 days"
    assert (monthly.reviews_since, weekly.reviews_since) == (
        NOW - timedelta(days=30),
        NOW - timedelta(days=7),
    )
    agent = Viewer("li.na", "Li Na", "agent", frozenset({"front-line"}))
    mine = await dashboard(console, agent, policy, NOW)
    assert (mine.reviews, mine.reviews_since) == (None, None), "supervisors and above only"

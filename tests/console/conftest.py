"""Fixtures of the console's tests that read its tables directly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from services import service_migrations
from shared.database import Connection, connect
from shared.privileges import provision, role_url, service_role
from shared.settings import Settings


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

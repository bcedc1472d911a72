"""A service's schema as it was before one of its migrations: a test fills it with rows that the
migration's data step must carry over, then applies the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from services import service_migrations
from shared.database import Connection, connect
from shared.migrations import migrate
from shared.settings import Settings


@asynccontextmanager
async def schema_before(
    settings: Settings, service: str, version: int
) -> AsyncIterator[tuple[Connection, Callable[[], Awaitable[None]]]]:
    """A connection to ``service``'s schema migrated up to (not including) its migration
    ``version``, and what applies the rest."""
    migrations = service_migrations(service)
    before = [m for m in migrations if m.source != service or m.version < version]
    assert max(m.version for m in before if m.source == service) == version - 1

    async def finish() -> None:
        await migrate(conn, service, migrations)

    conn = await connect(settings.require_database_url(), schema=service)
    try:
        await migrate(conn, service, before)
        yield conn, finish
    finally:
        await conn.close()

"""Driving time across services: ``DESK_CLOCK=driven`` makes each read its ``desk_clock`` row."""

from __future__ import annotations

from datetime import datetime

from services import service_migrations
from shared.database import connect
from shared.migrations import migrate
from shared.settings import Settings


class DrivenTime:
    """The test's clock for these services (their schemas are migrated first, so the clock is
    set before any of them reads it)."""

    def __init__(self, settings: Settings, *services: str) -> None:
        assert settings.clock == "driven", "drive time with settings.replace(clock='driven')"
        self.settings = settings
        self.services = services
        self.now: datetime | None = None

    async def set(self, moment: datetime) -> None:
        conn = await connect(self.settings.require_database_url())
        try:
            for name in self.services:
                await migrate(conn, name, service_migrations(name))
                async with conn.transaction():
                    await conn.execute(f"DELETE FROM {name}.desk_clock")
                    await conn.execute(f"INSERT INTO {name}.desk_clock VALUES ($1)", moment)
        finally:
            await conn.close()
        self.now = moment

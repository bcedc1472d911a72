"""Driving time across services: ``DESK_CLOCK=driven`` makes each read its ``desk_clock`` row."""

from __future__ import annotations

from datetime import datetime

from services import service_migrations
from shared.database import connect
from shared.migrations import migrate
from shared.settings import Settings
from tests.support.events import publish_mark
from tests.support.kafka import KafkaProbe


class DrivenTime:
    """The test's clock for these services (their schemas are migrated first, so the clock is
    set before any of them reads it).

    A test publishing dispatch's events itself (sla without dispatch) passes ``marks``: each
    moment set is then also dispatch's mark — every event the test published is out — as
    dispatch's idle relay would say it (``shared.relay``); sla's timers wait for one."""

    def __init__(self, settings: Settings, *services: str, marks: KafkaProbe | None = None) -> None:
        assert settings.clock == "driven", "drive time with settings.replace(clock='driven')"
        self.settings = settings
        self.services = services
        self.marks = marks
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
        if self.marks is not None:
            await publish_mark(self.marks, moment)

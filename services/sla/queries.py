"""What operators' tools read of sla's tables (``desk sla report``)."""

from __future__ import annotations

from datetime import datetime

from services.sla.report import SlaReport, build_report
from shared.database import Connection

__all__ = ["SlaReport", "report"]


async def report(conn: Connection, since: datetime) -> SlaReport | None:
    """Compliance, mean times and tickets at risk since ``since``; None before sla created its
    tables (``desk migrate sla``)."""
    if await conn.fetchval("SELECT to_regclass('sla.clocks')") is None:
        return None
    async with conn.transaction():
        await conn.execute("SET LOCAL search_path = sla")
        return await build_report(conn, since)

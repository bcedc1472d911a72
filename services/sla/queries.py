"""What operators' tools read of sla's tables (``desk sla report``)."""

from __future__ import annotations

from datetime import datetime

from services.policy.sla import DEFAULT_SATISFACTION, SatisfactionPolicy
from services.sla.report import SlaReport, build_report
from shared.database import Connection

__all__ = ["SlaReport", "report"]


async def report(
    conn: Connection, since: datetime, satisfaction: SatisfactionPolicy = DEFAULT_SATISFACTION
) -> SlaReport | None:
    """Compliance, mean times, tickets at risk and CSAT since ``since``; None before sla created
    its tables (``desk migrate sla``)."""
    if await conn.fetchval("SELECT to_regclass('sla.satisfaction')") is None:
        return None
    async with conn.transaction():
        await conn.execute("SET LOCAL search_path = sla")
        return await build_report(conn, since, satisfaction=satisfaction)

"""notify's gauges: what is still to be sent, and what waits for a ticket's receipt.

Counters say what happened; these say what is outstanding now, for every instance alike (they
are read from the shared tables), so an operator can alert on a receipt that never comes.
"""

from __future__ import annotations

from prometheus_client import Gauge

from shared.service import Service

PENDING = Gauge("desk_notify_notices_pending", "Notices stored and not yet sent or failed.")
WAITING = Gauge(
    "desk_notify_events_waiting_for_receipt",
    "Events owing someone a notice that wait for the ticket's receipt or its routing.",
)
OLDEST_WAITING = Gauge(
    "desk_notify_oldest_event_waiting_seconds",
    "How long the oldest of those has waited (0 when none).",
)


async def refresh_gauges(service: Service) -> None:
    """Read the outstanding work (every ``notify_report_interval``, see app)."""
    async with service.pool.acquire() as conn:
        now = await service.clock.now(conn)
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM deliveries WHERE status IN ('pending', 'sending')), "
            "(SELECT count(*) FROM waiting_events), (SELECT min(since) FROM waiting_events)"
        )
    assert row is not None
    PENDING.set(row[0])
    WAITING.set(row[1])
    OLDEST_WAITING.set(max((now - row[2]).total_seconds(), 0.0) if row[2] else 0.0)

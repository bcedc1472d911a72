"""The timer worker: fires every clock whose timer is due, exactly once, across instances.

Timers are rows (``clocks.due_at``), never only memory: after a restart every overdue timer is
simply due and fires on the first round. Each round, in one transaction: read the clock's time
(PostgreSQL's, or the test's), claim up to ``sla_timer_batch`` due clocks with
``FOR UPDATE SKIP LOCKED``, record what each fires on its stream (warnings, breach, escalation
levels), and let the projection move each timer to its next mark. A second instance claims other
rows; a killed one's claims are released by its rolled-back transaction.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

from services.sla import storage
from services.sla.settings import SlaSettings
from shared.faults import crash_point
from shared.logging import get_logger
from shared.scheduling import sleep_until_due
from shared.unit_of_work import Cause, UnitOfWork

if TYPE_CHECKING:
    from shared.service import Service, Worker

log = get_logger(__name__)
FIRED = Counter("desk_sla_timer_events_total", "Events fired by SLA timers, by type.", ["type"])
LATENESS = Histogram(
    "desk_sla_timer_lateness_seconds",
    "How long after its due time a timer fired.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)


def timer_worker(settings: SlaSettings) -> Worker:
    """The worker firing due timers, ``sla_timer_batch`` clocks a round."""

    async def fire_due_timers(service: Service) -> None:
        """Run rounds until cancelled; sleep until the next timer, at most one poll interval."""
        interval, limit = settings.sla_timer_interval, settings.sla_timer_batch
        while True:
            fired = await fire_round(service, limit)
            if fired < limit:  # else a backlog: no sleep
                await sleep_until_due(service.pool, service.clock, storage.next_due, interval)

    return fire_due_timers


async def fire_round(service: Service, limit: int) -> int:
    """One transaction: claim due clocks, fire them. Returns how many clocks fired."""
    async with service.pool.acquire() as conn, conn.transaction():
        now = await service.clock.now(conn)
        clocks = await storage.claim_due(conn, now, limit)
        if not clocks:
            return 0
        uow = UnitOfWork(conn, service.store, now, service.projections)
        for clock in clocks:
            events = clock.fire(now)
            if not events:
                continue
            # Caused by the event that last set the clock running.
            record = uow.caused_by(Cause(clock.ticket_id, clock.cause_event_id))
            record(clock.clock_id, events, expected_version=clock.version, subject=clock.ticket_id)
            for event in events:
                FIRED.labels(event.event_type()).inc()
                due = getattr(event, "due_at", None) or now
                LATENESS.observe(max(timedelta(0), now - due).total_seconds())
        await uow.flush()
        crash_point("sla.timers.before_commit")
    log.debug("timers fired", clocks=len(clocks))
    return len(clocks)

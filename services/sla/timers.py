"""The timer worker: fires every clock whose timer is due, exactly once, across instances.

Timers are rows (``clocks.due_at``), never only memory: after a restart every overdue timer is
simply due and fires on the first round. Each round, in one transaction: read the clock's time
(PostgreSQL's, or the test's), claim up to ``sla_timer_batch`` due clocks with
``FOR UPDATE SKIP LOCKED``, record what each fires on its stream (warnings, breach, escalation
levels), and let the projection move each timer to its next mark. A second instance claims other
rows; a killed one's claims are released by its rolled-back transaction.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge, Histogram

from services.dispatch.events import MARKS_TOPIC as DISPATCH_MARKS
from services.sla import storage
from services.sla.handlers import LifecycleEvents
from services.sla.settings import SlaSettings
from shared.faults import crash_point
from shared.logging import get_logger
from shared.readmarks import ReadMarks, RelayMarks
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
UNREAD = Gauge(
    "desk_sla_unread_seconds",
    "How far sla's reading of dispatch's events (its slowest partition, as far as dispatch's "
    "marks vouch for) trails its clock: timers due within it wait.",
)


HOLD_POLL = 0.05
"""Seconds between rounds while a due timer waits for sla's reading and dispatch's marks to
pass it: it fires soon after, for a few cheap queries a round. While the marks stand still
(dispatch or its relay stopped), a whole poll interval."""


def timer_worker(settings: SlaSettings) -> Worker:
    """The worker firing due timers, ``sla_timer_batch`` clocks a round."""
    interval, limit = settings.sla_timer_interval, settings.sla_timer_batch

    async def fire_due_timers(service: Service) -> None:
        """Run rounds until cancelled; sleep until the next timer is due, at most one poll
        interval (briefly while a due one waits to be read past; a whole one while the broker
        is away or dispatch's marks stand still)."""
        [tickets] = [c for c in service.consumers if isinstance(c.subscription, LifecycleEvents)]
        # dispatch's marks, not a margin: an answer recorded in time but published late (its
        # relay stopped or lagging) must be read before its clock is judged.
        dispatch = RelayMarks(settings, settings.topic(DISPATCH_MARKS), "dispatch")
        marks = ReadMarks(settings, tickets.topics[0], tickets.group_id, timedelta(0),
                          marks=dispatch)  # fmt: skip
        unreachable = False
        warned: tuple[str, ...] = ()  # the idle clocks last warned of
        mark: datetime | None = None
        mark_moved = 0.0  # loop time the mark last moved
        # Marks come every relay_mark_interval: none for twice that, and they stand still.
        patience = 2 * settings.relay_mark_interval.total_seconds()
        try:
            while True:
                try:
                    fired, behind, idle = await fire_round(service, limit, marks)
                except KafkaError as error:  # the broker is away: timers wait, said once
                    if not unreachable:
                        log.warning("timers wait: the broker does not say what sla has read",
                                    error=repr(error))  # fmt: skip
                    unreachable = True
                    await asyncio.sleep(interval.total_seconds())
                    continue
                if unreachable:
                    log.info("timers resume: the broker answers again")
                unreachable = False
                if idle:
                    # Due by their row, nothing to fire by their state: waking every 5 ms for
                    # them (the due moment is past) would spin a core; an interval's wait
                    # bounds what it costs, and the warning (once for the same clocks) says
                    # which.
                    if idle != warned:
                        log.warning("timers due fire nothing; waiting an interval",
                                    clocks=list(idle))  # fmt: skip
                        warned = idle
                    await asyncio.sleep(interval.total_seconds())
                    continue
                if fired >= limit:  # a backlog: no sleep
                    continue
                if behind:
                    # What sla has applied but not yet committed (the consumers commit once an
                    # interval) counts as read only once committed: commit it now.
                    await tickets.commit_pending()
                    loop_time = asyncio.get_running_loop().time()
                    if dispatch.through is None and mark_moved == 0.0:
                        log.warning("timers wait: no mark from dispatch's relay read yet",
                                    topic=dispatch.topic)  # fmt: skip
                        mark_moved = loop_time  # said once
                    if dispatch.through != mark:
                        mark, mark_moved = dispatch.through, loop_time
                    still = loop_time - mark_moved > patience
                    wait = interval.total_seconds()
                    await asyncio.sleep(wait if still else min(wait, HOLD_POLL))
                else:
                    await sleep_until_due(service.pool, service.clock, storage.next_due, interval)
        finally:
            await marks.close()

    return fire_due_timers


class Round(NamedTuple):
    fired: int
    """Clocks fired."""
    behind: bool
    """A due timer waits: sla has not read every partition past it (or no mark says so)."""
    idle: tuple[str, ...] = ()
    """Clocks claimed as due that fired nothing, when none fired: their row's due moment and
    their state disagree (a calendar's answer changed under them, a bug), so the next round
    would claim them again at once."""


async def fire_round(service: Service, limit: int, marks: ReadMarks) -> Round:
    """Claim due clocks whose tickets are read past their due moment and fire them, in one
    transaction. Raises ``KafkaError`` while the broker is away."""
    async with service.pool.acquire() as conn:
        now = await service.clock.now(conn)
        due = await storage.next_due(conn)
    if due is None or due > now:
        return Round(0, behind=False)
    read_until = await marks.read_until(now)
    slowest = min(read_until.values(), default=None)
    unmarked = marks.partitions - read_until.keys()  # not read past any checkpoint yet
    behind = bool(unmarked) or slowest is None or slowest < due
    # No mark read yet (dispatch never ran, or not upgraded): unbounded, not zero.
    UNREAD.set(math.inf if slowest is None else max(0.0, (now - slowest).total_seconds()))
    floor = None if unmarked else slowest
    async with service.pool.acquire() as conn, conn.transaction():
        clocks = await storage.claim_due(conn, now, read_until, floor, limit)
        if not clocks:
            return Round(0, behind)
        uow = UnitOfWork(conn, service.store, now, service.projections)
        idle = []
        for clock, read_past in clocks:
            events = clock.fire(read_past)
            if not events:
                idle.append(clock.clock_id)
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
    return Round(len(clocks), behind, tuple(idle) if len(idle) == len(clocks) else ())

"""Closing resolved tickets nobody reopened: the last step of the SOP, done by the system.

A resolved ticket stays open to the customer: their reply within ``routing.reopen_window``
reopens it, their rating is recorded. Without this worker it stayed *resolved* forever unless a
person closed it — no closure notice, and no retention of the customer's data, which counts
from the close (``services/intake/retention.py``). Every ``DESK_DISPATCH_CLOSE_INTERVAL`` dispatch
closes, as ``system``, the tickets resolved at least ``routing.close_after`` ago (shipped: 7d,
the reopen window's length, so no reply that could still reopen a ticket finds it closed), by
its own clock. Each batch takes the tickets' pools like any message about them and decides
under those locks, so a reply that reopens a ticket at the same moment wins or loses whole.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from services.dispatch import reach, storage
from services.dispatch.handlers import DeskSession
from services.dispatch.ticket import Ticket
from services.policy import Policy
from shared.durations import format_duration
from shared.logging import get_logger
from shared.service import Worker, every
from shared.unit_of_work import Cause, UnitOfWork

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.service import Service

log = get_logger(__name__)

CLOSE_BATCH = 200
"""Tickets closed per transaction; a backlog is closed batch after batch in the same round."""


def closing(session: DeskSession, interval: timedelta) -> Worker:
    """The worker that closes resolved tickets past the policy's ``close_after``."""

    async def close_resolved(service: Service) -> None:
        # Another batch only after a full one all closed: one the desk left a ticket of (a reply
        # reopened it meanwhile) waits for the next round rather than spin on the same rows.
        while await _close_batch(service, session) == CLOSE_BATCH:
            pass

    return every(interval, close_resolved)


async def _close_batch(service: Service, session: DeskSession) -> int:
    async with service.pool.acquire() as conn, conn.transaction():
        now = await service.clock.now(conn)
        close_after = session.policy.in_force(now).policy.routing.close_after
        if close_after is None:
            return 0
        due = await storage.resolved_before(conn, now - close_after, CLOSE_BATCH)
        if not due:
            return 0
        uow = UnitOfWork(conn, service.store, now, service.projections)
        desk = await session.open(uow, ticket_ids=due, touches=_their_groups, frees=0)
        closed = 0
        for ticket_id in due:
            desk.record = uow.caused_by(Cause(ticket_id))
            closed += desk.close_quiet(ticket_id)
        await uow.flush()
    log.info("resolved tickets closed", closed=closed, close_after=format_duration(close_after))
    return closed


def _their_groups(policy: Policy, tickets: Mapping[str, Ticket]) -> set[str]:
    """The pools of the tickets' groups and agents: a reply about one of them waits for us."""
    return set().union(*(reach.of_ticket(policy, t) for t in tickets.values()))

"""The system's own steps on quiet tickets: resolving the unanswered, closing the resolved.

A resolved ticket stays open to the customer: their reply within ``routing.reopen_window``
reopens it, their rating is recorded. Without this worker it stayed *resolved* forever unless a
person closed it — no closure notice, and no retention of the customer's data, which counts
from the close (``services/intake/retention.py``). Likewise a ticket *waiting for the customer*
whose question was never answered waited forever, holding its agent's place while its SLA
clocks stood paused. Every ``DESK_DISPATCH_CLOSE_INTERVAL`` dispatch, by its own clock and as
``system``:

1. resolves the tickets that have waited ``routing.resolve_unanswered_after`` for the
   customer's reply, with the policy's ``routing.unanswered_resolution`` reply (the customer's
   resolution notice; their reply within the reopen window still reopens it). Categories whose
   resolution must state more (``routing.resolution_requires``: complaints) wait for a person,
   and their assignee and supervisors are told so, once per question
   (``ticket.left_unanswered``);
2. reminds, once per question, the customers of tickets that have waited
   ``routing.remind_unanswered_after`` (a notification rule sends ``ticket.customer_reminded``);
3. closes the tickets resolved at least ``routing.close_after`` ago (shipped: 7d, the reopen
   window's length, so no reply that could still reopen a ticket finds it closed).

Each batch takes the tickets' pools like any message about them and decides under those locks,
so a customer's reply at the same moment wins or loses whole. And a ticket is settled only once
dispatch has read intake's events past its due moment — by intake's marks (``intake.marks``,
``shared.readmarks``), as sla's timers wait for dispatch's: a reply the customer sent in time but
dispatch has not read yet (dispatch down or behind, intake's relay stopped) is applied first,
instead of the ticket being resolved or closed under it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from aiokafka.errors import KafkaError

from services.dispatch import reach, storage
from services.dispatch.desk import Desk
from services.dispatch.handlers import DeskSession, Events
from services.dispatch.settings import DispatchSettings
from services.dispatch.ticket import Ticket
from services.intake.events import EVENTS_TOPIC as INTAKE_EVENTS
from services.intake.events import MARKS_TOPIC as INTAKE_MARKS
from services.policy import Policy
from shared.database import Connection
from shared.logging import get_logger
from shared.readmarks import ReadMarks, RelayMarks
from shared.unit_of_work import Cause, UnitOfWork

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shared.consumer import ConsumerRunner
    from shared.service import Service, Worker

log = get_logger(__name__)

BATCH = 200
"""Tickets settled per transaction; a backlog is settled batch after batch in the same round."""


@dataclass(frozen=True)
class Step:
    """One kind of settling: which tickets are due, and the desk's decision on each."""

    done: str
    """What the log says was done."""
    due: Callable[[Connection, Policy, datetime], Awaitable[list[str]]]
    settle: Callable[[Desk, str], bool]
    frees: bool
    """Whether settling frees an agent's place (the desk serves their groups' queues: read)."""


def _for_a_person(policy: Policy) -> list[str]:
    """Categories whose resolution must state more than the unanswered reply says (complaints):
    an unanswered ticket of one waits for a person instead of being resolved."""
    return [c for c, fields in policy.routing.resolution_requires.items() if fields]


async def _unanswered(conn: Connection, policy: Policy, now: datetime) -> list[str]:
    after = policy.routing.resolve_unanswered_after
    if after is None:
        return []
    exempt = _for_a_person(policy)
    return await storage.waiting_before(conn, now - after, BATCH, exempt=exempt)


async def _left_to_a_person(conn: Connection, policy: Policy, now: datetime) -> list[str]:
    after, held = policy.routing.resolve_unanswered_after, _for_a_person(policy)
    if after is None or not held:
        return []
    return await storage.waiting_before(conn, now - after, BATCH, only=held, untold=True)


async def _unreminded(conn: Connection, policy: Policy, now: datetime) -> list[str]:
    after = policy.routing.remind_unanswered_after
    if after is None:
        return []
    return await storage.waiting_before(conn, now - after, BATCH, unreminded=True)


async def _resolved(conn: Connection, policy: Policy, now: datetime) -> list[str]:
    close_after = policy.routing.close_after
    if close_after is None:
        return []
    return await storage.resolved_before(conn, now - close_after, BATCH)


STEPS = (
    Step("unanswered tickets resolved", _unanswered, Desk.resolve_unanswered, frees=True),
    Step(
        "unanswered tickets left to a person",
        _left_to_a_person,
        Desk.leave_unanswered,
        frees=False,
    ),
    Step("customers reminded of a question", _unreminded, Desk.remind_unanswered, frees=False),
    Step("resolved tickets closed", _resolved, Desk.close_quiet, frees=False),
)
"""In this order: a ticket due both a reminder and its resolution (a backlog) is resolved and
not reminded; one resolved unanswered is closed only ``close_after`` later."""


def closing(session: DeskSession, settings: DispatchSettings) -> Worker:
    """The worker that resolves unanswered tickets and closes resolved ones, by the policy: a
    round every ``dispatch_close_interval``, of the tickets due by the time dispatch has read
    intake up to."""
    interval = settings.dispatch_close_interval

    async def settle_quiet_tickets(service: Service) -> None:
        [replies] = [c for c in service.consumers if isinstance(c.subscription, Events)]
        intake = RelayMarks(settings, settings.topic(INTAKE_MARKS), "intake")
        marks = ReadMarks(settings, settings.topic(INTAKE_EVENTS), replies.group_id,
                          timedelta(0), marks=intake)  # fmt: skip
        said: str | None = None
        try:
            while True:
                waits = await _settle_round(service, session, replies, marks)
                if waits != said:  # said once, not every round, and once it no longer waits
                    log.info(waits or "quiet tickets settle: intake's events read past a mark")
                    said = waits
                await asyncio.sleep(interval.total_seconds())
        finally:
            await marks.close()

    return settle_quiet_tickets


async def _settle_round(
    service: Service, session: DeskSession, replies: ConsumerRunner[object], marks: ReadMarks
) -> str | None:
    """Settle what was due by the moment dispatch has read intake's events up to, and by now;
    or say why the round waits."""
    async with service.pool.acquire() as conn:
        now = await service.clock.now(conn)
    await replies.commit_pending()  # what it applied counts as read once committed
    try:
        read = await marks.read_until(now)
    except KafkaError:  # the broker is away: the round waits for the next
        return "quiet tickets wait: the broker does not say what dispatch has read"
    if not read or marks.partitions - read.keys():
        return "quiet tickets wait: intake's events not read past a mark of intake's relay yet"
    through = min(now, *read.values())
    for step in STEPS:
        # Another batch only after a full one all settled: one the desk left a ticket of (a
        # reply came meanwhile) waits for the next round rather than spin on the same rows.
        while await _settle_batch(service, session, step, through) == BATCH:
            pass
    return None


async def _settle_batch(
    service: Service, session: DeskSession, step: Step, through: datetime
) -> int:
    async with service.pool.acquire() as conn, conn.transaction():
        now = await service.clock.now(conn)
        due = await step.due(conn, session.policy.in_force(now).policy, through)
        if not due:
            return 0
        uow = UnitOfWork(conn, service.store, now, service.projections)
        frees = len(due) if step.frees else 0
        desk = await session.open(uow, ticket_ids=due, touches=_their_groups, frees=frees)
        settled = 0
        for ticket_id in due:
            desk.record = uow.caused_by(Cause(ticket_id))
            settled += step.settle(desk, ticket_id)
        await uow.flush()
    log.info(step.done, count=settled)
    return settled


def _their_groups(policy: Policy, tickets: Mapping[str, Ticket]) -> set[str]:
    """The pools of the tickets' groups and agents: a reply about one of them waits for us."""
    return set().union(*(reach.of_ticket(policy, t) for t in tickets.values()))

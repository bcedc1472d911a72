"""sla's consumer: dispatch's ticket events start, pause, resume, fulfil and stop clocks; the
customers' survey scores are kept beside them (CSAT).

Each batch locks its tickets' clocks, hands every event to a :class:`Timekeeper` with the time
dispatch recorded it (not when sla got to it: a lagging consumer must not make a response late),
and records what it decides on the clock streams with the dispatch event as cause.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.dispatch.events import EVENTS_TOPIC as DISPATCH_EVENTS
from services.dispatch.events import SatisfactionRecorded
from services.policy import Policy
from services.sla import storage
from services.sla.timekeeper import TIMED, Timekeeper
from shared.consumer import Delivered, EventSubscription, Inbound
from shared.policyfile import PolicySchedule
from shared.unit_of_work import UnitOfWork


class LifecycleEvents(EventSubscription):
    """dispatch's ticket events: what starts, pauses, resumes, fulfils and stops clocks, and
    the customers' scores."""

    name = "tickets"
    topics = (DISPATCH_EVENTS,)
    description = "Ticket lifecycle events from dispatch; they drive the SLA clocks."
    accepts = (*(kind.event_name for kind in TIMED), SatisfactionRecorded.event_name)

    def __init__(self, policy: PolicySchedule[Policy]) -> None:
        self.policy = policy

    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[Delivered]]) -> None:
        current, _ = await self.policy.adopt(uow.conn, uow.now)
        policy, version = current.policy, current.version
        ids = [str(getattr(m.message.data, "ticket_id", "")) for m in messages]
        ids = [i for i in ids if i]
        facts = await storage.tickets(uow.conn, ids)
        clocks = await storage.lock_clocks(uow.conn, ids)
        keeper = Timekeeper(policy.sla, version, facts, clocks)
        scores: list[storage.Score] = []
        for inbound in messages:
            envelope, data = inbound.message.envelope, inbound.message.data
            if isinstance(data, SatisfactionRecorded):
                known = facts.get(data.ticket_id)
                group, agent = (known.group_id, known.agent_id) if known else ("", None)
                scores.append(storage.Score(data, group, agent, envelope.time))
                continue
            record = uow.caused_by(envelope)
            keeper.on(data, envelope.time, str(envelope.id), record, envelope.streamversion)
        await storage.save_tickets(uow.conn, [facts[i] for i in keeper.changed])
        await storage.note_partitions(uow.conn, _partitions(messages))
        await storage.save_scores(uow.conn, scores)


def _partitions(messages: Sequence[Inbound[Delivered]]) -> dict[str, int]:
    """Each ticket's partition (the timers wait until it is read past their due moment)."""
    found = {}
    for inbound in messages:
        ticket_id = str(getattr(inbound.message.data, "ticket_id", ""))
        if ticket_id:
            found[ticket_id] = inbound.record.partition
    return found

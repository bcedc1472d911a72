"""What dispatch's ticket events do to a ticket's clocks. Pure: state in, clock events out.

The sla service keeps, per ticket, the facts that choose targets and recipients
(:class:`ClockFacts`) and one :class:`SlaClock` per metric. A classified ticket starts the
metrics that start at receipt or dispatch; its first assignment starts those that start at
assignment; responses, start of work and resolution fulfil the metrics that name them; waiting
for the customer pauses the metrics that pause; a customer reply resumes them; a reopen restarts
the metrics that restart; closing stops whatever still runs. A reclassification changes the facts
that choose the targets of clocks started afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import get_args

from services.dispatch import events as dispatch
from services.policy.sla import Metric, SlaPolicy, Start, Update, choose
from services.sla.clocks import SlaClock, business_calendar, fold
from services.sla.events import ClockStarted, LadderLevel
from shared.events import EventData
from shared.unit_of_work import Recorder

METRICS: tuple[Metric, ...] = get_args(Metric)
UNTIMED = (
    dispatch.TicketAccepted,
    dispatch.NoteAdded,
    dispatch.CustomerReminded,
    dispatch.LeftUnanswered,
    dispatch.CustomerFlagged,
    dispatch.SatisfactionRecorded,
)
"""dispatch's ticket events that start, pause, resume, fulfil or stop no clock."""
TIMED = tuple(kind for kind in dispatch.TICKET_EVENTS if kind not in UNTIMED)
"""The ticket events :meth:`Timekeeper.on` takes."""


@dataclass
class ClockFacts:
    """What sla knows of a ticket: what chooses its targets, and who answers for it now."""

    ticket_id: str
    number: str
    complexity: str
    priority: str
    channel: str
    complaint: bool
    major_complaint: bool
    received_at: datetime
    group_id: str
    agent_id: str | None = None
    waiting: bool = False
    updated_at: datetime | None = None
    """When sla last took a lifecycle event of the ticket (what-if replays the recent ones)."""
    closed: bool = False
    read_version: int | None = None
    """The place in the ticket's stream of the last of its events taken (None: taken before
    sla kept it): one at or before it is a redelivery, and changes nothing."""


_UPDATES: dict[type[EventData], Update] = {
    dispatch.TicketResponded: "responded",
    dispatch.WaitingForCustomer: "waiting_for_customer",
    dispatch.TicketEscalated: "escalated",
    dispatch.TicketReassigned: "reassigned",
}
"""dispatch's events the customer hears of (a reply, a question, a progress notice)."""


def clock_id(ticket_id: str, metric: str) -> str:
    """Also the clock's stream id."""
    return f"clock-{ticket_id}-{metric}"


class Timekeeper:
    """Applies ticket events to the clocks of one batch (loaded by the caller, locked).

    The live consumer hands it each batch; what-if (:mod:`services.sla.replay`) hands it a past
    ticket's whole history under a proposed policy. Both get the same decisions from here and
    from :class:`SlaClock`: there is no second copy of the rules.
    """

    def __init__(
        self,
        policy: SlaPolicy | None,
        policy_version: str,
        tickets: dict[str, ClockFacts],
        clocks: dict[str, SlaClock],
    ) -> None:
        self.policy = policy
        self.policy_version = policy_version
        self.tickets = tickets
        self.clocks = clocks
        self.changed: set[str] = set()
        self._record: Recorder | None = None
        self._ids: dict[str, list[str]] = {}
        self._ladder_of: tuple[SlaPolicy, list[LadderLevel]] | None = None
        for facts in tickets.values():
            self._answer(facts)

    def on(
        self,
        event: EventData,
        at: datetime,
        event_id: str,
        record: Recorder,
        version: int | None = None,
    ) -> None:
        """One of dispatch's ticket events, recorded at ``at`` with id ``event_id``; the clock
        events it causes go to ``record`` (the unit of work's, caused by that event, in
        production; a list in unit tests).

        ``version`` is the event's place in its ticket's stream. One at or before the last
        taken is that event again — dispatch's store replayed, or the broker read from the
        start once sla's processed ids were purged — and changes nothing: a reopen taken twice
        restarted a closed ticket's clock, which then breached and escalated again."""
        self._record = record
        if isinstance(event, dispatch.TicketClassified):
            self._classified(event, at, event_id)
            if (made := self.tickets.get(event.ticket_id)) is not None:
                self._taken(made, version)
            return
        facts = self.tickets.get(getattr(event, "ticket_id", ""))
        if facts is None:
            return  # a ticket classified before sla kept clocks: nothing to time
        if not self._taken(facts, version):
            return  # taken before
        self.changed.add(facts.ticket_id)
        facts.updated_at = at
        self._apply(facts, event, at, event_id)

    def _apply(self, facts: ClockFacts, event: EventData, at: datetime, event_id: str) -> None:  # noqa: PLR0912
        update = _UPDATES.get(type(event))
        if update is not None:
            self._updated(facts, update, at, event_id)
        match event:
            case dispatch.TicketAssigned():
                self._left_waiting(facts, at, event_id)
                self._answer(facts, event.group_id, event.agent_id)
                self._start(facts, "assigned", at, event_id)
            case dispatch.TicketQueued():
                self._left_waiting(facts, at, event_id)
                self._answer(facts, event.group_id, None)
            case dispatch.TicketReassigned():
                self._answer(facts, event.to_group, None)
            case dispatch.TicketEscalated():
                if event.to_group is not None:
                    self._answer(facts, event.to_group, None)
            case dispatch.TicketResponded():
                self._fulfil(facts, "responded", at, event_id)
            case dispatch.WorkStarted():
                self._fulfil(facts, "work_started", at, event_id)
            case dispatch.TicketResolved():
                self._resolved(facts, at, event_id)
            case dispatch.SpecialistRequested():
                self._start(facts, "specialist_requested", at, event_id, group_id=event.to_group)
            case dispatch.FindingsProvided():
                self._fulfil(facts, "findings_provided", at, event_id)
            case dispatch.WaitingForCustomer():
                self._asked(facts, at, event_id)
            case dispatch.TicketResumed():
                self._left_waiting(facts, at, event_id)
            case dispatch.TicketReopened():
                facts.waiting = False
                self._reopened(facts, at, event_id)
            case dispatch.TicketReclassified():
                # Clocks keep their terms; those started from now on follow the correction.
                facts.complexity = event.to_complexity
                facts.complaint = event.to_category == "complaint"
                facts.major_complaint = event.complaint_severity == "major"
            case dispatch.TicketClosed():
                facts.closed = True
                for clock in self._open(facts):
                    self._emit(facts, clock, clock.stop(at, "ticket_closed", event_id))
            case _:
                pass

    def _resolved(self, facts: ClockFacts, at: datetime, event_id: str) -> None:
        """The clocks the resolution meets are met; the others are over too: one left running
        would warn, breach and climb the ladder for a ticket nobody has left to answer."""
        self._fulfil(facts, "resolved", at, event_id)
        for clock in self._open(facts):
            self._emit(facts, clock, clock.stop(at, "ticket_resolved", event_id))

    def _asked(self, facts: ClockFacts, at: datetime, event_id: str) -> None:
        """An agent asked the customer a question (which reaches them: it meets the clocks it
        fulfils), and the ticket waits for them: the clocks that pause then stop counting."""
        self._fulfil(facts, "waiting_for_customer", at, event_id)
        facts.waiting = True
        for clock in self._open(facts):
            self._emit(facts, clock, clock.pause(at, event_id))

    def _left_waiting(self, facts: ClockFacts, at: datetime, event_id: str) -> None:
        """The ticket no longer waits for its customer: the clocks its question paused run
        again. The customer's reply says so (``TicketResumed``), and so does a waiting ticket
        handed on — escalated or reassigned — to be assigned or queued anew (dispatch's
        state is then ``assigned`` or ``queued``: nobody waits for the customer any longer)."""
        if not facts.waiting:
            return
        facts.waiting = False
        for clock in self._open(facts):
            self._emit(facts, clock, clock.resume(at, event_id))

    def _taken(self, facts: ClockFacts, version: int | None) -> bool:
        """Note the ticket's event at ``version`` taken; False if it was before."""
        if version is None:
            return True
        if facts.read_version is not None and version <= facts.read_version:
            return False
        facts.read_version = version
        self.changed.add(facts.ticket_id)
        return True

    def forget(self) -> None:
        """Let go of every ticket and clock (a replay goes on to the next ticket)."""
        self.tickets.clear()
        self.clocks.clear()
        self.changed.clear()
        self._ids.clear()

    def fire_due(self, ticket_id: str, at: datetime, record: Recorder) -> None:
        """Fire what the ticket's clocks have due by ``at``, as the timer worker would have at
        each due moment (every fired event carries its ``due_at``). What-if runs this before
        each event it replays; the live worker claims due clocks and calls ``SlaClock.fire``."""
        facts = self.tickets.get(ticket_id)
        if facts is None:
            return
        self._record = record
        for opened in self._open(facts):
            # Mark by mark, as a worker firing on time would (one running late skips the
            # warnings its breach makes stale).
            clock = opened
            while clock.open and (due := clock.due_at) is not None and due <= at:
                fired = clock.fire(due)
                if not fired:
                    break
                self._emit(facts, clock, fired)
                clock = self.clocks[clock.clock_id]

    # --- steps ----------------------------------------------------------------------------

    def _classified(self, event: dispatch.TicketClassified, at: datetime, event_id: str) -> None:
        if event.ticket_id in self.tickets:
            return
        facts = ClockFacts(
            ticket_id=event.ticket_id,
            number=event.number,
            complexity=event.complexity,
            priority=event.priority,
            channel=event.channel,
            complaint=event.complaint,
            major_complaint=event.complaint_severity == "major",
            received_at=event.received_at,
            group_id=event.group_id,
            updated_at=at,
        )
        self.tickets[event.ticket_id] = facts
        self.changed.add(event.ticket_id)
        self._start(facts, "received", event.received_at, event_id)
        self._start(facts, "dispatched", at, event_id)

    def _start(
        self,
        facts: ClockFacts,
        start: Start,
        at: datetime,
        event_id: str,
        *,
        group_id: str | None = None,
    ) -> None:
        """Start the metrics that start here; ``group_id``: the group the clock answers to
        when not the ticket's (a specialist request's), and whose clock may run again (a new
        request once the last one was answered)."""
        policy = self.policy
        if policy is None:
            return
        for metric, definition in policy.metrics.items():
            before = self.clocks.get(clock_id(facts.ticket_id, metric))
            again = group_id is not None and before is not None and not before.open
            if definition.starts != start or (before is not None and not again):
                continue
            chosen = choose(policy, metric, facts)
            if chosen is None:
                continue
            index, rule = chosen
            calendar = policy.calendars[rule.calendar]
            target_s = rule.target.total_seconds()
            started = ClockStarted(
                ticket_id=facts.ticket_id,
                number=facts.number,
                metric=metric,
                clock_id=clock_id(facts.ticket_id, metric),
                run=before.run + 1 if before is not None else 1,
                cause_event_id=event_id,
                policy_version=self.policy_version,
                calendar_version=calendar.version,
                started_at=at,
                deadline=business_calendar(calendar.version, calendar.definition).add(at, target_s),
                target_s=target_s,
                rule=rule.name or f"targets[{index}]",
                calendar=rule.calendar,
                calendar_definition=calendar.definition,
                warnings=policy.warnings if definition.warns else [],
                ladder=self._ladder(policy) if definition.escalates else [],
                pauses_when_waiting=definition.pauses_when_waiting,
                fulfilled_by=list(definition.fulfilled_by),
                restarts_on_reopen=definition.restarts_on_reopen,
                repeats=definition.repeats,
                group_id=group_id or facts.group_id,
                agent_id=None if group_id else facts.agent_id,
            )
            self._emit(facts, before, [started])

    def _ladder(self, policy: SlaPolicy) -> list[LadderLevel]:
        """The policy's ladder as clocks keep it (made once per policy)."""
        if self._ladder_of is None or self._ladder_of[0] is not policy:
            ladder = [
                LadderLevel(level=s.level, after_s=s.after.total_seconds())
                for s in policy.escalation
            ]
            self._ladder_of = (policy, ladder)
        return self._ladder_of[1]

    def _fulfil(self, facts: ClockFacts, by: str, at: datetime, event_id: str) -> None:
        for clock in self._open(facts):
            if by in clock.fulfilled_by:
                self._emit(facts, clock, clock.fulfil(at, by, event_id))

    def _updated(self, facts: ClockFacts, update: Update, at: datetime, event_id: str) -> None:
        """The customer heard from the desk: the clocks that measure the quiet since start
        again (paused again at once while the ticket waits for the customer)."""
        metrics = self.policy.metrics if self.policy else {}
        for clock in self._open(facts):
            definition = metrics.get(clock.metric)  # type: ignore[call-overload]
            if definition is None or update not in definition.restarts_on:
                continue
            events = clock.restart(at, event_id, reason="updated")
            started = events[-1]
            if facts.waiting and clock.pauses_when_waiting and isinstance(started, ClockStarted):
                events += SlaClock.started(started).pause(at, event_id)
            self._emit(facts, clock, events)

    def _reopened(self, facts: ClockFacts, at: datetime, event_id: str) -> None:
        for clock in self._of(facts):
            if clock.restarts_on_reopen:
                self._emit(facts, clock, clock.restart(at, event_id))

    def _answer(
        self, facts: ClockFacts, group_id: str | None = None, agent_id: str | None = None
    ) -> None:
        """Who answers for the ticket now (given: it changed); its clocks' events name them."""
        if group_id is not None:
            facts.group_id, facts.agent_id = group_id, agent_id
        for clock in self._of(facts):
            if not clock.follows_ticket:
                continue
            clock.group_id, clock.agent_id = facts.group_id, facts.agent_id

    def _of(self, facts: ClockFacts) -> list[SlaClock]:
        ids = self._ids.get(facts.ticket_id)
        if ids is None:
            ids = self._ids[facts.ticket_id] = [clock_id(facts.ticket_id, m) for m in METRICS]
        found = [self.clocks.get(i) for i in ids]
        return [c for c in found if c is not None]

    def _open(self, facts: ClockFacts) -> list[SlaClock]:
        return [c for c in self._of(facts) if c.open]

    def _emit(self, facts: ClockFacts, clock: SlaClock | None, events: list[EventData]) -> None:
        """Record a clock's events on its stream (the first starts it) and fold them in."""
        if not events:
            return
        expected = clock.version if clock else 0
        for event in events:
            clock = fold(clock, event)
        assert clock is not None
        assert self._record is not None, "clock events are recorded only while handling an event"
        self._record(clock.clock_id, events, expected_version=expected, subject=facts.ticket_id)
        self.clocks[clock.clock_id] = clock

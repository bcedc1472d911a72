"""The dispatch desk: what happens to tickets and agents, message by message. Pure.

A :class:`Desk` holds, for one batch, the tickets it touches, the :class:`Board` (agents,
loads, round-robin cursors) and the queues, and turns each input — a triaged ticket, a ticket
or agent command, a customer reply, an SLA escalation — into events, applying them at once so
the next message of the batch sees their effect. It records through ``record``, a
:class:`~shared.unit_of_work.Recorder` the handler points at each message's cause (the unit of
work in production, a list in unit tests), and reports refusals instead of raising.

Capacity is never exceeded: an agent is only chosen while their open tickets are below their
capacity, and a ticket that finds nobody waits in its group's queue, served by priority then
age as soon as someone frees room or comes on shift.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from jinja2 import TemplateError

from services.dispatch.commands import (
    Accept,
    AddNote,
    AgentCommand,
    Close,
    Escalate,
    FlagCustomer,
    GoOffShift,
    GoOnShift,
    ProvideFindings,
    Reassign,
    Reclassify,
    RecordSatisfaction,
    Reopen,
    RequestCustomerInfo,
    RequestSpecialist,
    Resolve,
    Respond,
    SetCapacity,
    StartWork,
    TicketCommand,
)
from services.dispatch.events import (
    AgentRegistered,
    CapacityChanged,
    CustomerFlagged,
    CustomerReminded,
    FindingsProvided,
    FollowUpRequested,
    LeftUnanswered,
    NoteAdded,
    SatisfactionRecorded,
    ShiftEnded,
    ShiftStarted,
    SpecialistRequested,
    TicketAccepted,
    TicketAssigned,
    TicketClassified,
    TicketClosed,
    TicketEscalated,
    TicketQueued,
    TicketReassigned,
    TicketReclassified,
    TicketReopened,
    TicketResolved,
    TicketResponded,
    TicketResumed,
    WaitingForCustomer,
    WorkStarted,
    agent_stream,
)
from services.dispatch.routing import AgentOnBoard, Board, classify, escalation_group, group_for
from services.dispatch.ticket import OPEN, ActorKind, Refused, Ticket, check, reply_outcome
from services.intake.events import CustomerReplied, TicketTriaged, ticket_stream
from services.policy import Policy
from services.sla.events import EscalationRaised
from services.vocabulary import CATEGORY_OF, Category, ComplaintSeverity, Complexity, RouteCause
from shared.durations import format_duration
from shared.events import EventData
from shared.personal import for_subject, ref_in
from shared.templating import render_text
from shared.unit_of_work import Recorder


class OutOfReach(RuntimeError):
    """A batch was about to route in a group it did not lock: a bug, never a message's fault."""


@dataclass
class CommandRefusal:
    reason: str
    detail: str
    status: str | None = None


@dataclass
class Desk:
    policy: Policy
    version: str
    now: datetime
    board: Board
    record: Recorder
    tickets: dict[str, Ticket] = field(default_factory=dict)
    """By ticket id: every ticket this batch touches, loaded or created."""
    queues: dict[str, list[Ticket]] = field(default_factory=dict)
    """By group: queued tickets (the heads of the queues, as loaded, plus new ones)."""
    agent_versions: dict[str, int] = field(default_factory=dict)
    held: set[str] | None = None
    """The groups this batch holds the pools of (None: every group); see :meth:`_within`."""
    flags: dict[str, str] = field(default_factory=dict)
    """Customer key -> why they were flagged: the customers of this batch's new tickets."""

    # --- tickets arriving ----------------------------------------------------------------

    def classify(self, triaged: TicketTriaged) -> None:
        """A triaged ticket from intake: choose its group, then an agent or the queue."""
        if triaged.ticket_id in self.tickets:
            return  # already dispatched (its triage redelivered under another event id)
        route = classify(
            self.policy.routing,
            complexity=triaged.complexity,
            complaint_severity=triaged.complaint_severity,
            product_line=triaged.product_line,
            problem_type=triaged.problem_type,
        )
        classified = TicketClassified(
            ticket_id=triaged.ticket_id,
            number=triaged.number,
            group_id=route.group_id,
            route=route.route,
            reason=route.reason,
            complexity=triaged.complexity,
            category=triaged.category,
            complaint=triaged.complaint,
            complaint_severity=triaged.complaint_severity,
            channel=triaged.channel,
            priority=triaged.priority,
            language=triaged.language,
            product_line=triaged.product_line,
            problem_type=triaged.problem_type,
            customer_tier=triaged.customer_tier,
            subject=triaged.subject,
            received_at=triaged.received_at,
            policy_version=self.version,
            customer_key=triaged.customer_key,
            customer_flag=self.flags.get(triaged.customer_key or ""),
        )
        ticket = Ticket.classified(classified, self.now)
        self.tickets[ticket.ticket_id] = ticket
        self.record(
            ticket_stream(ticket.ticket_id),
            [classified],
            expected_version=0,
            subject=ticket.ticket_id,
        )
        self._route(ticket, route.group_id, cause="classified", follows_up=self._followed(triaged))

    def _followed(self, triaged: TicketTriaged) -> Ticket | None:
        """The ticket a follow-up follows up, whose last agent it goes back to (if the policy
        says so)."""
        if not (triaged.follows_up and self.policy.routing.follow_ups_to_last_agent):
            return None
        return self.by_number(triaged.follows_up)

    def customer_replied(self, reply: CustomerReplied, cause_event_id: str) -> None:
        """A reply from the customer: a ticket that waited for it is in progress again; one
        resolved within the policy's reopen window is reopened with the reply as the reason; one
        closed, or resolved longer ago, asks intake for a follow-up ticket linked to it."""
        ticket = self.tickets.get(reply.ticket_id)
        if ticket is None:
            return
        ids = {"ticket_id": ticket.ticket_id, "number": ticket.number}
        window = self.policy.routing.reopen_window
        outcome = reply_outcome(ticket, self.now, window, written=reply.received_at)
        if outcome == "resume":
            self._emit(
                ticket,
                TicketResumed(**ids, cause="customer replied", cause_event_id=cause_event_id),
            )
        elif outcome == "reopen":
            reason = f"customer replied: {reply.body}"[:_REASON_CHARS]
            self._reopen(ticket, reason, "customer", by_reply=True)
        elif outcome in ("closed", "reopen_window_passed"):
            self._emit(
                ticket,
                FollowUpRequested(
                    **ids,
                    reason=outcome,
                    reply_event_id=cause_event_id,
                    channel=reply.channel,
                    channel_message_id=reply.channel_message_id,
                    received_at=reply.received_at,
                    subject=reply.subject,
                    body=reply.body,
                    attachments=reply.attachments,
                ),
            )

    def escalation(self, raised: EscalationRaised, cause_event_id: str) -> None:
        """An SLA escalation: the ticket goes to the ladder's group for that level — unless the
        clock is a specialist request's: the group asked is late, not the ticket's owner, who
        keeps it (notify tells the group asked and its supervisors)."""
        if raised.specialists:
            return
        ticket = self.tickets.get(raised.ticket_id)
        if ticket is None or ticket.status not in ("queued", *_LOADED_STATES):
            return
        if raised.level <= ticket.escalation_level:
            return  # each level once per ticket
        self._escalate(ticket, raised.level, f"sla:{raised.metric}", cause_event_id, actor="system")

    def close_quiet(self, ticket_id: str) -> bool:
        """Close a ticket resolved at least ``routing.close_after`` ago and not reopened since
        (decided here, under the batch's locks: a reply may have reopened it meanwhile)."""
        ticket = self.tickets.get(ticket_id)
        close_after = self.policy.routing.close_after
        if ticket is None or ticket.status != "resolved" or close_after is None:
            return False
        resolved = ticket.resolved_at or ticket.updated_at or self.now
        if self.now - resolved < close_after:
            return False
        reason = f"resolved {format_duration(close_after)} ago and not reopened"
        ids = {"ticket_id": ticket.ticket_id, "number": ticket.number}
        silent = self._late(resolved + close_after)
        self._emit(ticket, TicketClosed(**ids, actor="system", reason=reason, silent=silent))
        return True

    def remind_unanswered(self, ticket_id: str) -> bool:
        """Remind the customer, once per question, of a ticket that has waited
        ``routing.remind_unanswered_after`` for their reply; say how long until the system
        resolves it, when it will."""
        ticket = self.tickets.get(ticket_id)
        routing = self.policy.routing
        after, resolve = routing.remind_unanswered_after, routing.resolve_unanswered_after
        if ticket is None or ticket.status != "waiting_for_customer" or after is None:
            return False
        since = ticket.waiting_since or ticket.updated_at or self.now
        if ticket.reminded or self.now - since < after:
            return False
        resolves = resolve is not None and self._resolves_unanswered(ticket)
        self._emit(
            ticket,
            CustomerReminded(
                **_ids(ticket),
                waited=format_duration(after),
                resolves_in=format_duration(resolve - after) if resolves and resolve else None,
                silent=self._late(since + after),
            ),
        )
        return True

    def _late(self, due: datetime) -> bool:
        """Whether what was due at ``due`` comes ``routing.silent_if_late_by`` late or more: a
        backlog (dispatch was stopped, a period shortened) is recorded, and nobody told."""
        return self.now - due > self.policy.routing.silent_if_late_by

    def _resolves_unanswered(self, ticket: Ticket) -> bool:
        """Whether the system may resolve the ticket unanswered: not if its category's
        resolution must state more than the system can (complaints)."""
        return not self.policy.routing.resolution_requires.get(ticket.category)  # type: ignore[call-overload]

    def leave_unanswered(self, ticket_id: str) -> bool:
        """Tell a ticket's people, once per question, that it has waited
        ``routing.resolve_unanswered_after`` for the customer's reply when the system may not
        resolve it (a complaint): otherwise nobody would hear of it again."""
        ticket = self.tickets.get(ticket_id)
        after = self.policy.routing.resolve_unanswered_after
        if ticket is None or ticket.status != "waiting_for_customer" or after is None:
            return False
        since = ticket.waiting_since or ticket.updated_at or self.now
        if ticket.left_unanswered or self.now - since < after or self._resolves_unanswered(ticket):
            return False
        silent = self._late(since + after)
        waited = format_duration(after)
        self._emit(ticket, LeftUnanswered(**_ids(ticket), waited=waited, silent=silent))
        return True

    def resolve_unanswered(self, ticket_id: str) -> bool:
        """Resolve, as ``system``, a ticket that has waited ``routing.resolve_unanswered_after``
        for the customer's reply (decided here, under the batch's locks: the reply may have come
        meanwhile), with the policy's reply in its language. It frees the agent's place. A
        backlog is resolved and closed silently: nobody has heard of the ticket for long."""
        ticket = self.tickets.get(ticket_id)
        routing, replies = self.policy.routing, self.policy.replies
        after, name = routing.resolve_unanswered_after, routing.unanswered_resolution
        if ticket is None or ticket.status != "waiting_for_customer" or after is None or not name:
            return False
        since = ticket.waiting_since or ticket.updated_at or self.now
        if self.now - since < after or not self._resolves_unanswered(ticket):
            return False
        waited = format_duration(after)
        source = replies.templates[name][replies.language_of(name, ticket.language)]
        try:
            text = render_text(source, {"number": ticket.number, "waited": waited}).strip()
        except TemplateError:  # a reply that fails at render time must not hold the ticket
            text = ""
        freed, reason = ticket.agent_id, f"waited {waited} for the customer's reply"
        silent = self._late(since + after)
        self._emit(
            ticket,
            TicketResolved(
                **_ids(ticket),
                agent_id="system",
                resolution=text[:_TEXT_CHARS] or f"No reply in {waited}: resolved.",
                reason=reason,
                silent=silent,
            ),
        )
        if silent:  # a backlog, settled at once: a closure notice later would be the first word
            self._emit(
                ticket, TicketClosed(**_ids(ticket), actor="system", reason=reason, silent=True)
            )
        self._free(freed)
        return True

    # --- commands --------------------------------------------------------------------------

    def command(self, command: TicketCommand) -> CommandRefusal | None:
        ticket = self.by_number(command.ticket_number)
        if ticket is None:
            return CommandRefusal("unknown_ticket", f"no ticket numbered {command.ticket_number}")
        try:
            actor = _actor(command)
            kinds = self._actor_kinds(actor, ticket)
            self._run(command, actor, ticket, kinds)
        except Refused as refused:
            return CommandRefusal(refused.reason, refused.detail, ticket.status)
        return None

    def _run(  # noqa: PLR0912 - one branch per command reads better than a table of lambdas
        self, command: TicketCommand, actor: str, ticket: Ticket, kinds: set[ActorKind]
    ) -> None:
        if isinstance(command, ProvideFindings) and ticket.specialist_group is None:
            raise Refused("no_specialist_request", "no specialist request waits for findings")
        check(command.type, ticket, kinds)
        ids = {"ticket_id": ticket.ticket_id, "number": ticket.number}
        agent = ticket.agent_id or actor
        match command:
            case Accept():
                self._emit(ticket, TicketAccepted(**ids, agent_id=agent))
            case Respond():
                self._respond(ticket, command, actor)
            case StartWork():
                self._emit(ticket, WorkStarted(**ids, agent_id=agent))
            case AddNote():
                self._emit(ticket, NoteAdded(**ids, agent_id=actor, note=command.note))
            case RequestCustomerInfo():
                self._emit(
                    ticket, WaitingForCustomer(**ids, agent_id=agent, question=command.question)
                )
            case Resolve():
                self._resolve(ticket, command, agent)
            case Reopen():
                window = self.policy.routing.reopen_window
                if actor == "customer" and reply_outcome(ticket, self.now, window) != "reopen":
                    # As a reply that late would: their link outlived the window.
                    raise Refused(
                        "reopen_window_passed",
                        f"resolved more than {format_duration(window)} ago: write to us again",
                    )
                self._reopen(ticket, command.reason, actor)
            case Close():
                self._emit(ticket, TicketClosed(**ids, actor=actor))
            case Reassign():
                self._reassign(ticket, command, actor, kinds)
            case Escalate():
                self._escalate_to_supervisor(ticket, f"manual: {command.reason}", actor)
            case FlagCustomer():
                self._flag(ticket, command, actor)
            case RequestSpecialist():
                self._request_specialist(ticket, command, actor)
            case ProvideFindings():
                group = ticket.specialist_group or ""
                self._emit(
                    ticket,
                    FindingsProvided(
                        **ids, actor=actor, from_group=group, findings=command.findings
                    ),
                )
            case Reclassify():
                self._reclassify(ticket, command, actor)
            case RecordSatisfaction():
                if ticket.satisfaction is not None:
                    raise Refused("already_recorded", "satisfaction was already recorded")
                self._emit(
                    ticket,
                    SatisfactionRecorded(
                        **ids, score=command.score, comment=command.comment, actor=actor
                    ),
                )

    def agent_command(self, command: AgentCommand) -> CommandRefusal | None:
        agent = self.board.agents.get(command.agent_id)
        if agent is None:
            return CommandRefusal("unknown_agent", f"no agent {command.agent_id} in the directory")
        try:
            actor = _actor(command)
        except Refused as refused:
            return CommandRefusal(refused.reason, refused.detail)
        directory = self.policy.directory
        supervisor = any(directory.supervises(actor, g) for g in agent.profile.groups)
        refusal = _who_may(command, agent, actor, supervisor=supervisor)
        if refusal is not None:
            return refusal
        stream = agent_stream(agent.id)
        match command:
            case GoOnShift():
                if agent.on_shift:
                    return CommandRefusal("illegal_transition", f"{agent.id} is already on shift")
                agent.on_shift = True
                self._record_agent(stream, ShiftStarted(agent_id=agent.id, actor=actor))
                self._serve(agent.profile.groups)
            case GoOffShift():
                if not agent.on_shift:
                    return CommandRefusal("illegal_transition", f"{agent.id} is not on shift")
                agent.on_shift = False
                self._record_agent(stream, ShiftEnded(agent_id=agent.id, actor=actor))
            case SetCapacity():
                agent.capacity = command.capacity
                self._record_agent(
                    stream,
                    CapacityChanged(agent_id=agent.id, capacity=command.capacity, actor=actor),
                )
                self._serve(agent.profile.groups)
        return None

    def register_agents(self, known: dict[str, AgentRegistered]) -> None:
        """Record the directory's agents that dispatch has not seen, or whose profile changed."""
        for profile in self.policy.directory.agents:
            seen = known.get(profile.id)
            registered = AgentRegistered(
                agent_id=profile.id,
                name=profile.name,
                role=profile.role,
                groups=profile.groups,
                skills=profile.skills,
                languages=profile.languages,
                capacity=seen.capacity if seen else profile.capacity,
                on_shift=seen.on_shift if seen else profile.on_shift,
                policy_version=self.version,
            )
            if seen is None or _profile(seen) != _profile(registered):
                self._record_agent(agent_stream(profile.id), registered)

    # --- how things move -------------------------------------------------------------------

    def by_number(self, number: str) -> Ticket | None:
        return next((t for t in self.tickets.values() if t.number == number), None)

    # --- policy versions -------------------------------------------------------------------

    def group_for(self, group_id: str) -> str:
        """The group a ticket of ``group_id`` belongs to under this policy (:func:`group_for`)."""
        return group_for(self.policy, group_id)

    def _within(self, *group_ids: str) -> None:
        """Refuse to change a group whose pool this batch does not hold (a gap in
        :mod:`services.dispatch.reach`): loudly, never a capacity limit broken in silence."""
        if self.held is not None and not self.held.issuperset(group_ids):
            outside = sorted(set(group_ids) - self.held)
            raise OutOfReach(f"dispatch batch reached groups it does not hold: {outside}")

    def move_retired(self, tickets: Sequence[Ticket]) -> None:
        """Re-route the open tickets of groups this version retired (to their ``moved_to``) or
        dropped (to the default group), with the reason. Run once per version, in the
        transaction that switches to it."""
        for ticket in tickets:
            home = self.policy.directory.home(ticket.group_id)
            if ticket.status not in OPEN or home == ticket.group_id:
                continue
            target = self.group_for(ticket.group_id)
            reason = (
                f"group {ticket.group_id} retired by policy {self.version}: moved to {target}"
                if home
                else f"group {ticket.group_id} is not in policy {self.version}: "
                f"default group {target}"
            )
            self._move(ticket, target, actor="system", reason=reason)

    def _emit(self, ticket: Ticket, *events: EventData) -> None:
        expected = ticket.version
        if (ref := ref_in(ticket.subject)) is not None:  # free text: the customer's, sealed
            events = tuple(for_subject(e, ref) for e in events)
        for event in events:
            ticket.apply(event, self.now)
        self.record(
            ticket_stream(ticket.ticket_id),
            events,
            expected_version=expected,
            subject=ticket.ticket_id,
        )

    def _record_agent(self, stream: str, event: EventData) -> None:
        agent_id = stream.removeprefix("agent-")
        expected = self.agent_versions.get(agent_id, 0)
        self.agent_versions[agent_id] = expected + 1
        self.record(stream, [event], expected_version=expected)

    def _route(
        self,
        ticket: Ticket,
        group_id: str,
        *,
        cause: RouteCause,
        only: str | None = None,
        follows_up: Ticket | None = None,
    ) -> None:
        """Give the ticket to an agent of the group, or put it in the group's queue.
        ``only``: that agent or the queue; ``follows_up``: the ticket this one follows up, whose
        last agent takes it if they can, else whoever the group's strategy picks."""
        group_id = self.group_for(group_id)
        self._within(group_id)
        choose = functools.partial(
            self.board.choose, group_id, language=ticket.language, tags=ticket.tags
        )
        back_to = follows_up.agent_id if follows_up is not None else None
        choice = choose(only=back_to) if back_to is not None else None
        if follows_up is not None and choice is not None and choice.agent_id is not None:
            choice = replace(
                choice, reason=f"follows up {follows_up.number}, back to its agent; {choice.reason}"
            )
        else:
            choice = choose(only=only)
        ids = {"ticket_id": ticket.ticket_id, "number": ticket.number}
        if choice.agent_id is None:
            self._emit(
                ticket,
                TicketQueued(
                    **ids,
                    group_id=group_id,
                    priority=ticket.priority,
                    reason=choice.reason,
                    cause=cause,
                ),
            )
            self.queues.setdefault(group_id, []).append(ticket)
            return
        self.board.take(choice.agent_id)
        self._emit(
            ticket,
            TicketAssigned(
                **ids,
                group_id=group_id,
                agent_id=choice.agent_id,
                strategy=choice.strategy,
                reason=choice.reason,
                cause=cause,
                policy_version=self.version,
            ),
        )

    def _free(self, agent_id: str | None) -> None:
        """An agent has room again: serve the queues of their groups."""
        if agent_id is None:
            return
        self.board.release(agent_id)
        agent = self.board.agents.get(agent_id)
        if agent is not None:
            self._serve(agent.profile.groups)

    def _serve(self, group_ids: Sequence[str]) -> None:
        """Assign queued tickets, best first, while the groups have someone with room."""
        self._within(*group_ids)
        for group_id in group_ids:
            queue = self.queues.get(group_id, [])
            queue.sort(key=lambda t: t.queue_key)
            while queue:
                head = queue[0]
                if head.status != "queued" or head.group_id != group_id:
                    queue.pop(0)
                    continue
                choice = self.board.choose(group_id, language=head.language, tags=head.tags)
                if choice.agent_id is None:
                    break
                queue.pop(0)
                self.board.take(choice.agent_id)
                self._emit(
                    head,
                    TicketAssigned(
                        ticket_id=head.ticket_id,
                        number=head.number,
                        group_id=group_id,
                        agent_id=choice.agent_id,
                        strategy=choice.strategy,
                        reason=f"from the queue: {choice.reason}",
                        cause="queue",
                        policy_version=self.version,
                    ),
                )

    def _reopen(self, ticket: Ticket, reason: str, actor: str, *, by_reply: bool = False) -> None:
        ids = {"ticket_id": ticket.ticket_id, "number": ticket.number}
        agent = self.board.agents.get(ticket.agent_id or "")
        reopened = TicketReopened(**ids, actor=actor, reason=reason, by_reply=by_reply)
        self._emit(ticket, reopened)
        if self.policy.routing.reopen_to_same_agent and agent is not None and agent.has_room:
            self._within(*agent.profile.groups)
            self.board.take(agent.id)  # back with the agent who resolved it
            return
        group = self.group_for(ticket.group_id)
        self._emit(
            ticket,
            TicketReassigned(
                **ids,
                actor="system",
                from_group=ticket.group_id,
                from_agent=ticket.agent_id,
                to_group=group,
                reason="reopened and its agent has no room",
            ),
        )
        self._route(ticket, group, cause="reopened")

    def _reassign(
        self, ticket: Ticket, command: Reassign, actor: str, kinds: set[ActorKind]
    ) -> None:
        directory = self.policy.directory
        target_agent = None
        if command.to_agent is not None:
            target_agent = self.board.agents.get(command.to_agent)
            if target_agent is None:
                raise Refused("unknown_agent", f"no agent {command.to_agent} in the directory")
        if command.to_group is not None and command.to_group not in directory.group:
            raise Refused("unknown_group", f"no group {command.to_group}")
        group = command.to_group or (
            ticket.group_id
            if target_agent is None or ticket.group_id in target_agent.profile.groups
            else target_agent.profile.groups[0]
        )
        if target_agent is not None and group not in target_agent.profile.groups:
            raise Refused("unknown_agent", f"{target_agent.id} is not in {group}")
        if group != ticket.group_id and "supervisor" not in kinds:
            raise Refused("not_permitted", "only a supervisor may reassign to another group")
        if target_agent is not None and not target_agent.has_room:
            raise Refused("agent_unavailable", f"{target_agent.id} is off shift or at capacity")
        if target_agent is not None and target_agent.id == ticket.agent_id:
            raise Refused("illegal_transition", f"the ticket is already {target_agent.id}'s")
        only = target_agent.id if target_agent else None
        self._move(ticket, group, actor=actor, reason=command.reason, only=only)

    def _move(
        self, ticket: Ticket, group: str, *, actor: str, reason: str, only: str | None = None
    ) -> None:
        """Take the ticket from its group and agent (with the reason) and route it in ``group``;
        the agent's room goes to their queues."""
        freed = ticket.agent_id if ticket.holds_capacity else None
        self._emit(
            ticket,
            TicketReassigned(
                ticket_id=ticket.ticket_id,
                number=ticket.number,
                actor=actor,
                from_group=ticket.group_id,
                from_agent=ticket.agent_id,
                to_group=group,
                reason=reason,
            ),
        )
        self._route(ticket, group, cause="reassigned", only=only)
        self._free(freed)

    def _reclassify(self, ticket: Ticket, command: Reclassify, actor: str) -> None:
        """Correct triage; routing sends the ticket where its corrected class belongs."""
        complexity, category, severity = corrected_class(self.policy, ticket, command)
        if (complexity, category, severity) == (
            ticket.complexity,
            ticket.category,
            ticket.complaint_severity,
        ):
            raise Refused("illegal_transition", f"the ticket is already {complexity} {category}")
        route = classify(
            self.policy.routing,
            complexity=complexity,
            complaint_severity=severity,
            product_line=ticket.product_line,
            problem_type=ticket.problem_type,
        )
        group, previous = self.group_for(route.group_id), ticket.group_id
        self._emit(
            ticket,
            TicketReclassified(
                ticket_id=ticket.ticket_id,
                number=ticket.number,
                actor=actor,
                reason=command.reason,
                from_complexity=ticket.complexity,
                to_complexity=complexity,
                from_category=ticket.category,
                to_category=category,
                complaint_severity=severity,
                from_group=previous,
                to_group=group,
                policy_version=self.version,
            ),
        )
        if group != previous:
            why = f"reclassified as {complexity} {category} ({route.reason}): {command.reason}"
            self._move(ticket, group, actor=actor, reason=why)

    def _escalate(
        self, ticket: Ticket, level: int, cause: str, cause_event_id: str | None, *, actor: str
    ) -> None:
        to_group = escalation_group(self.policy.routing.escalation, level, ticket.group_id)
        freed = ticket.agent_id if ticket.holds_capacity and to_group else None
        group = self.policy.directory.group.get(self.group_for(ticket.group_id))
        supervisors = group.supervisors if group else []
        self._emit(
            ticket,
            TicketEscalated(
                ticket_id=ticket.ticket_id,
                number=ticket.number,
                level=level,
                cause=cause,
                cause_event_id=cause_event_id,
                actor=actor,
                from_group=ticket.group_id,
                to_group=to_group,
                supervisors=list(supervisors),
            ),
        )
        if to_group is not None:
            self._route(ticket, to_group, cause="escalated")
            self._free(freed)

    # --- the exceptions path (sop.md: abusive customers, missing permissions, hand-offs) ------

    def _respond(self, ticket: Ticket, command: Respond, actor: str) -> None:
        """The agent's words, or the policy's standard reply in the ticket's language."""
        message, language = command.message, None
        if command.template is not None:
            replies = self.policy.replies
            if command.template not in replies.templates:
                raise Refused("unknown_template", f"no reply template {command.template!r}")
            language = replies.language_of(command.template, ticket.language)
            context = {"number": ticket.number, "subject": ticket.subject}
            try:
                text = render_text(replies.templates[command.template][language], context)
            except TemplateError as error:
                raise Refused("template_error", f"{command.template}: {error}") from None
            message = text.strip()[:_TEXT_CHARS]
            if not message:
                raise Refused("template_error", f"{command.template} renders no text")
        assert message is not None  # the command carries a message or a template
        self._emit(
            ticket,
            TicketResponded(
                **_ids(ticket),
                agent_id=actor,
                message=message,
                first_response=not ticket.responded,
                template=command.template,
                language=language,
            ),
        )

    def _resolve(self, ticket: Ticket, command: Resolve, agent: str) -> None:
        """A resolution states what the policy requires of the ticket's category."""
        required = self.policy.routing.resolution_requires.get(ticket.category, [])  # type: ignore[call-overload]
        missing = [name for name in required if getattr(command, name) is None]
        if missing:
            raise Refused(
                "resolution_incomplete",
                f"a {ticket.category} is resolved with {', '.join(required)}: "
                f"{', '.join(missing)} missing",
            )
        freed = ticket.agent_id
        self._emit(
            ticket,
            TicketResolved(
                **_ids(ticket),
                agent_id=agent,
                resolution=command.resolution,
                cause=command.cause,
                actions=command.actions,
                compensation=command.compensation,
            ),
        )
        self._free(freed)

    def _flag(self, ticket: Ticket, command: FlagCustomer, actor: str) -> None:
        """Record the flag (the customer's later tickets carry it) and hand the ticket to the
        group's supervisor, unless a supervisor already has it."""
        self._emit(
            ticket,
            CustomerFlagged(
                **_ids(ticket),
                actor=actor,
                reason=command.reason,
                customer_key=ticket.customer_key,
            ),
        )
        if ticket.customer_key:
            self.flags[ticket.customer_key] = command.reason
        supervisor = self._supervisor_for(ticket)
        if supervisor is None or supervisor == ticket.agent_id:
            return
        group = self.policy.directory.agent[supervisor].groups[0]
        self._move(
            ticket,
            group,
            actor=actor,
            reason=f"customer flagged: {command.reason}",
            only=supervisor,
        )

    def _escalate_to_supervisor(self, ticket: Ticket, cause: str, actor: str) -> None:
        """A person's escalation, at any level: the ticket goes to its group's supervisor."""
        supervisor = self._supervisor_for(ticket)
        if supervisor is None or supervisor == ticket.agent_id:
            raise Refused("no_supervisor", f"nobody above {ticket.agent_id} supervises the ticket")
        group = self.policy.directory.agent[supervisor].groups[0]
        freed = ticket.agent_id if ticket.holds_capacity else None
        self._emit(
            ticket,
            TicketEscalated(
                **_ids(ticket),
                level=ticket.escalation_level + 1,
                cause=cause,
                actor=actor,
                from_group=ticket.group_id,
                to_group=group,
                supervisors=[supervisor],
                to_agent=supervisor,
            ),
        )
        self._route(ticket, group, cause="escalated", only=supervisor)
        self._free(freed)

    def _supervisor_for(self, ticket: Ticket) -> str | None:
        """Who a ticket goes up to: a supervisor of its group other than its agent (the first
        with room, else the first); for a supervisor's own ticket, one of theirs."""
        directory = self.policy.directory
        groups = [self.group_for(ticket.group_id)]
        holder = directory.agent.get(ticket.agent_id or "")
        if holder is not None:
            groups += holder.groups
        for group_id in groups:
            group = directory.group.get(group_id)
            above = [a for a in (group.supervisors if group else []) if a != ticket.agent_id]
            if above:
                agents = self.board.agents
                free = [a for a in above if a in agents and agents[a].has_room]
                return (free or above)[0]
        return None

    def _request_specialist(self, ticket: Ticket, command: RequestSpecialist, actor: str) -> None:
        if command.to_group not in self.policy.directory.group:
            raise Refused("unknown_group", f"no group {command.to_group}")
        if command.to_group == self.group_for(ticket.group_id):
            raise Refused("illegal_transition", f"the ticket is already {command.to_group}'s")
        if ticket.specialist_group is not None:
            raise Refused(
                "specialist_pending", f"{ticket.specialist_group} has not answered the last request"
            )
        self._emit(
            ticket,
            SpecialistRequested(
                **_ids(ticket),
                actor=actor,
                agent_id=ticket.agent_id,
                to_group=command.to_group,
                question=command.question,
            ),
        )

    def _actor_kinds(self, actor: str, ticket: Ticket) -> set[ActorKind]:
        if actor == "customer":
            return {"customer"}
        if actor == "system":
            return {"system"}
        profile = self.policy.directory.agent.get(actor)
        if profile is None:
            raise Refused("unknown_actor", f"{actor} is not an agent of the directory")
        kinds: set[ActorKind] = {"agent"}
        if actor == ticket.agent_id:
            kinds.add("assignee")
        # A retired (or dropped) group's tickets are supervised where they go: group_for.
        if self.policy.directory.supervises(actor, self.group_for(ticket.group_id)):
            kinds.add("supervisor")
        asked = ticket.specialist_group
        if asked and (asked in profile.groups or self.policy.directory.supervises(actor, asked)):
            kinds.add("specialist")
        return kinds


def _ids(ticket: Ticket) -> dict[str, str]:
    """The fields that name the ticket in each of its events."""
    return {"ticket_id": ticket.ticket_id, "number": ticket.number}


def _actor(command: TicketCommand | AgentCommand) -> str:
    """The actor the command's credential proved (dispatch sets it before the desk sees it)."""
    if command.actor is None:
        raise Refused("unknown_actor", "the command has no actor")
    return command.actor


_REASON_CHARS = 2000
"""A reopen's reason quotes at most this much of the customer's reply."""
_TEXT_CHARS = 32_768
"""A rendered standard reply is held to what a respond command's message may be."""
_LOADED_STATES = ("assigned", "accepted", "in_progress", "waiting_for_customer")
_COMPLEXITY_OF: dict[Category, Complexity] = {c: x for x, c in CATEGORY_OF.items()}


def corrected_class(
    policy: Policy, ticket: Ticket, command: Reclassify
) -> tuple[Complexity, Category, ComplaintSeverity]:
    """The complexity, category and complaint severity a reclassify command means.

    A complaint is a category of its own (its complexity from the triage policy unless given);
    otherwise complexity and category go together, as triage pairs them, and a command giving
    only one of them implies the other.
    """
    if command.category == "complaint":
        severity: ComplaintSeverity = command.complaint_severity or "ordinary"
        complaints = policy.triage.complaints
        implied = (
            complaints.major_complexity if severity == "major" else complaints.ordinary_complexity
        )
        return command.complexity or implied, "complaint", severity
    if command.category is not None:
        complexity = command.complexity or _COMPLEXITY_OF[command.category]
        if CATEGORY_OF[complexity] != command.category:
            raise Refused("invalid_command", f"a {complexity} ticket is not a {command.category}")
        return complexity, command.category, "none"
    assert command.complexity is not None  # the command requires one of the two
    if ticket.category == "complaint":
        return command.complexity, "complaint", ticket.complaint_severity  # type: ignore[return-value]
    return command.complexity, CATEGORY_OF[command.complexity], "none"


def _profile(event: AgentRegistered) -> tuple[object, ...]:
    return (event.name, event.role, event.groups, event.skills, event.languages)


def board_from(
    policy: Policy,
    states: dict[str, tuple[bool, int]],
    loads: dict[str, int],
    cursors: dict[str, str],
) -> Board:
    """The directory of the policy with each agent's shift, capacity and load."""
    agents = {}
    for profile in policy.directory.agents:
        on_shift, capacity = states.get(profile.id, (profile.on_shift, profile.capacity))
        agents[profile.id] = AgentOnBoard(profile, on_shift, capacity, loads.get(profile.id, 0))
    return Board(policy.directory, agents, dict(cursors))


def _who_may(
    command: AgentCommand, agent: AgentOnBoard, actor: str, *, supervisor: bool
) -> CommandRefusal | None:
    """The agent, a supervisor of their group or the system acts on an agent; an agent may say
    they can take less, but more than the directory gives them would drain their groups' queues
    onto them alone: a supervisor's call."""
    if actor not in (command.agent_id, "system") and not supervisor:
        return CommandRefusal(
            "not_permitted", "only the agent, a supervisor of their group or the system may"
        )
    ceiling = agent.profile.capacity
    raising = isinstance(command, SetCapacity) and command.capacity > ceiling
    if raising and actor == agent.id and not supervisor:
        return CommandRefusal(
            "not_permitted",
            f"{agent.id} may set their own capacity up to the directory's {ceiling}; "
            "above it, a supervisor of their group",
        )
    return None

"""dispatch's consumers: events (triaged tickets, customer replies, SLA escalations) and commands
(ticket and agent commands).

Every batch runs the same way (:class:`DeskSession`): lock the pools of the groups its messages
may change (:mod:`services.dispatch.pools`), load the tickets the batch names, the board (agents,
loads, cursors) and those groups' queues, hand each message to the
:class:`Desk` with a recorder caused by that message, record what it decides. A command acts as
the actor its credential proves (:mod:`services.dispatch.authority`). Refused commands become
``*CommandRejected`` events on ``tickets.commands.rejected`` / ``agents.commands.rejected``;
nothing else changes, and the refusal does not claim the command's id: the same command sent
again is evaluated anew (answered again, or applied if it now can be).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from prometheus_client import Counter

from services.dispatch import reach, storage
from services.dispatch.authority import (
    UNAUTHENTICATED,
    Attributed,
    Unattributed,
    attribute,
    refusal,
)
from services.dispatch.commands import (
    AGENT_COMMAND_TYPES,
    AgentCommand,
    TicketCommand,
    Unreadable,
    read_agent_command,
    read_ticket_command,
    unreadable,
)
from services.dispatch.desk import CommandRefusal, Desk, board_from
from services.dispatch.events import (
    AGENT_COMMANDS,
    TICKET_COMMANDS,
    AgentCommandRejected,
    CommandRejected,
    TicketCommandRejected,
)
from services.dispatch.pools import Locks, pools
from services.dispatch.routing import Board
from services.dispatch.ticket import Ticket
from services.intake.events import EVENTS_TOPIC as INTAKE_EVENTS
from services.intake.events import CustomerReplied, TicketTriaged
from services.policy import Policy
from services.sla.events import EVENTS_TOPIC as SLA_EVENTS
from services.sla.events import EscalationRaised
from shared.consumer import Delivered, EventSubscription, Inbound, Subscription
from shared.credentials import PROOF_HEADER, CommandVerifier
from shared.database import Connection
from shared.deadletter import Record
from shared.eventstore import ANY_VERSION
from shared.keys import KeyRing
from shared.keystore import KeyStore
from shared.logging import get_logger
from shared.personal import for_subject, keys_for, ref_in
from shared.policyfile import POLICY_CHECK_INTERVAL, PolicySchedule
from shared.service import Service, Worker, every
from shared.unit_of_work import Cause, UnitOfWork

log = get_logger(__name__)
REFUSED = Counter(
    "desk_dispatch_commands_refused_total", "Commands refused, by reason.", ["kind", "reason"]
)
REPLAYED = Counter(
    "desk_dispatch_replies_replayed_total",
    "Customer replies delivered again after their ids were forgotten, and left alone.",
)


_FREES = 2
"""Queued tickets one message can serve at most beyond the room there is now: the place it
frees (an agent's, by a resolution, a transfer or an escalation), and the loaded head it may
take out of the queue itself (a queued ticket closed or moved), which is skipped, not served."""

Reach = Callable[[Policy, Mapping[str, Ticket]], set[str]]
"""The groups a batch's messages may change, given the policy and the tickets they name."""


class DeskSession:
    """Opens a :class:`Desk` on a unit of work: lock, load, register the directory's agents.

    The locks are the pools of the groups the batch may change (:mod:`services.dispatch.pools`),
    or the whole desk in the transaction that switches policy versions; loads, cursors and
    queues are read after them, so two instances never decide on the same agent's room."""

    def __init__(self, policy: PolicySchedule[Policy]) -> None:
        self.policy = policy
        self._pools: dict[str, dict[str, str]] = {}
        """Policy version -> group -> pool (a handful of versions at most)."""

    async def open(
        self,
        uow: UnitOfWork,
        *,
        ticket_ids: Sequence[str] = (),
        numbers: Sequence[str] = (),
        touches: Reach | None = None,
        frees: int | None = None,
        customers: Sequence[str | None] = (),
    ) -> Desk:
        """The batch's desk; the handler points ``desk.record`` at each message's cause.

        ``touches`` says which groups the messages may change (None: every group). ``frees``
        bounds how many queued tickets the messages can serve beyond the room there is now:
        0 reads no queue (none of them frees room); None reads a window of every held queue
        (they may add any room: an agent's shift or capacity). Each queue is read that deep and
        no deeper: serving assigns one head per free place, so the rest would be read for
        nothing — with long queues, hundreds of rows a batch."""
        conn = uow.conn
        in_force = self.policy.in_force(uow.now)
        locks = Locks(conn, self._pools_of(in_force.version, in_force.policy))
        if touches is None or self.policy.pending_switch(uow.now):
            await locks.take(None)
        else:
            first = await self._tickets(conn, ticket_ids, numbers)  # before the locks: a guess
            await locks.take(touches(in_force.policy, first))
        current, switched = await self.policy.adopt(conn, uow.now)
        policy, version = current.policy, current.version
        tickets = await self._tickets(conn, ticket_ids, numbers)
        if touches is not None:  # a ticket may have moved to another pool meanwhile
            await locks.widen(touches(policy, tickets))
        held = locks.groups()
        known = await storage.agent_states(conn)
        board = board_from(
            policy,
            {a: (e.on_shift, e.capacity) for a, (e, _) in known.items()},
            await storage.loads(conn),
            await storage.cursors(conn),
        )
        if frees != 0:
            depths = _depths(board, held, frees)
            for ticket_id, ticket in (await storage.queued(conn, depths)).items():
                tickets.setdefault(ticket_id, ticket)
        stranded: list[str] = []
        if switched:  # tickets of groups this version retired or dropped move, once
            outside = await storage.open_outside(conn, policy.directory.group)
            stranded = list(outside)
            for ticket_id, ticket in outside.items():
                tickets.setdefault(ticket_id, ticket)
        # Agents are registered because the policy's directory names them.
        directory = uow.caused_by(Cause(f"policy-{version}"))
        desk = Desk(policy, version, uow.now, board, directory, tickets=tickets, held=held)
        desk.flags = await storage.customer_flags(conn, customers)
        for ticket in tickets.values():
            if ticket.status == "queued" and (held is None or ticket.group_id in held):
                desk.queues.setdefault(ticket.group_id, []).append(ticket)
        desk.agent_versions = {a: v for a, (_, v) in known.items()}
        desk.register_agents({a: e for a, (e, _) in known.items()})
        desk.move_retired([tickets[i] for i in stranded])
        return desk

    def _pools_of(self, version: str, policy: Policy) -> dict[str, str]:
        found = self._pools.get(version)
        if found is None:
            found = self._pools[version] = pools(policy.directory)
        return found

    @staticmethod
    async def _tickets(
        conn: Connection, ticket_ids: Sequence[str], numbers: Sequence[str]
    ) -> dict[str, Ticket]:
        tickets = await storage.tickets_by_id(conn, ticket_ids)
        tickets.update(await storage.tickets_by_number(conn, numbers))
        return tickets


def _depths(board: Board, held: set[str] | None, frees: int | None) -> dict[str, int] | None:
    """How deep to read each held queue: the room its agents have now plus what the batch can
    free (None: a window of every queue, as deep as storage reads when room can appear from
    anywhere)."""
    if held is None or frees is None:
        return None if held is None else dict.fromkeys(held, storage.QUEUE_WINDOW)
    return {g: min(storage.QUEUE_WINDOW, board.room(g) + frees) for g in held}


def policy_switch(session: DeskSession) -> Worker:
    """dispatch's switch to a policy version that comes into force while no message arrives:
    the tickets of the groups it retires move at that moment, holding the whole desk."""

    async def switch_policy(service: Service) -> None:
        async with service.pool.acquire() as conn, conn.transaction():
            now = await service.clock.now(conn)
            if not session.policy.pending_switch(now):
                return
            uow = UnitOfWork(conn, service.store, now, service.projections)
            await session.open(uow)
            await uow.flush()

    return every(POLICY_CHECK_INTERVAL, switch_policy)


class Events(EventSubscription):
    """Triaged tickets to classify and route, customer replies that resume waiting tickets
    (both from intake), and SLA escalations that move a ticket up the ladder."""

    name = "events"
    topics = (INTAKE_EVENTS, SLA_EVENTS)
    description = "Triaged tickets and customer replies from intake; escalations from sla."
    accepts = (TicketTriaged.event_name, CustomerReplied.event_name, EscalationRaised.event_name)

    def __init__(self, session: DeskSession, keys: KeyStore) -> None:
        self.session = session
        self.keys = keys

    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[Delivered]]) -> None:
        messages, moved = await _unread_replies(uow.conn, messages)
        if not messages:
            return
        ids = [m.message.data.ticket_id for m in messages]  # type: ignore[attr-defined]
        # A reply's text reopens with its words (sealed again as the reopening is recorded).
        replies = [m.message.data for m in messages if isinstance(m.message.data, CustomerReplied)]
        opening = await keys_for(self.keys, uow.conn, replies)

        def groups(policy: Policy, tickets: Mapping[str, Ticket]) -> set[str]:
            found: set[str] = set()
            for inbound in messages:
                data: Any = inbound.message.data
                found |= reach.of_event(policy, data, tickets.get(data.ticket_id))
            return found

        # Only an escalation frees room (its agent's), so only then are queues read.
        escalations = sum(isinstance(m.message.data, EscalationRaised) for m in messages)
        customers = [
            m.message.data.customer_key
            for m in messages
            if isinstance(m.message.data, TicketTriaged)
        ]
        # A follow-up goes back to its old ticket's agent: the old ticket is read for them.
        followed = [
            m.message.data.follows_up
            for m in messages
            if isinstance(m.message.data, TicketTriaged) and m.message.data.follows_up
        ]
        desk = await self.session.open(
            uow,
            ticket_ids=ids,
            numbers=followed,
            touches=groups,
            frees=_FREES * escalations,
            customers=customers,
        )
        for inbound in messages:
            delivered = inbound.message
            desk.record = uow.caused_by(delivered.envelope)
            data, event_id = delivered.data, str(delivered.envelope.id)
            if isinstance(data, TicketTriaged):
                desk.classify(data)
            elif isinstance(data, CustomerReplied):
                desk.customer_replied(opening.reveal(data), event_id)
            elif isinstance(data, EscalationRaised):
                desk.escalation(data, event_id)
        await storage.mark_replies_read(uow.conn, moved)


async def _unread_replies(
    conn: Connection, messages: Sequence[Inbound[Delivered]]
) -> tuple[list[Inbound[Delivered]], dict[str, int]]:
    """The batch without the customer's replies dispatch has acted on before, and the newest
    position per ticket of those it keeps. A reply is delivered again after
    ``processed_retention`` has forgotten its id when offsets are reset or expire; judged by
    the ticket as it is now, it would resume or reopen it as if just written. A reply's
    position in its ticket's intake stream says which came first, whatever the broker."""
    replied = [m.message.data for m in messages if isinstance(m.message.data, CustomerReplied)]
    read = await storage.replies_read(conn, [r.ticket_id for r in replied])
    kept: list[Inbound[Delivered]] = []
    moved: dict[str, int] = {}
    for inbound in messages:
        data = inbound.message.data
        if isinstance(data, CustomerReplied):
            position = inbound.message.envelope.streamversion
            if position <= read.get(data.ticket_id, 0):
                REPLAYED.inc()
                log.info(
                    "a reply acted on before is delivered again: left alone",
                    number=data.number,
                    position=position,
                    read=read[data.ticket_id],
                )
                continue
            read[data.ticket_id] = moved[data.ticket_id] = position
        kept.append(inbound)
    return kept, moved


DecodedCommand = Attributed | Unattributed | Unreadable


class Commands(Subscription[DecodedCommand]):
    """Commands from agent desks and operator tools: ticket commands (key: the ticket number)
    and agent commands (key: the agent id)."""

    name = "commands"
    topics = (TICKET_COMMANDS, AGENT_COMMANDS)
    description = (
        "Ticket commands (accept, respond, start_work, add_note, request_customer_info, resolve, "
        "reopen, close, reassign, escalate, reclassify, flag_customer, request_specialist, "
        "provide_findings, record_satisfaction) on tickets.commands "
        "and agent commands (go_on_shift, go_off_shift, set_capacity) on agents.commands. Each "
        "record carries a credential in two headers: desk_token, a token's header.payload (JWT, "
        "HS256, with kid), and desk_proof, the base64url HMAC-SHA256 of the record value keyed "
        "by the token's signature; the actor is the token's subject. Refused ones "
        "(unauthenticated, not_permitted, ...) are answered on tickets.commands.rejected / "
        "agents.commands.rejected with a reason. A refused command is evaluated anew only when "
        "signed again (a new issued_at or token): the same signed record again is skipped."
    )
    payload: Any = TicketCommand | AgentCommand

    def __init__(self, session: DeskSession, keys: KeyRing, max_ttl: timedelta) -> None:
        self.session = session
        self.verifier = CommandVerifier(keys)
        self.max_ttl = max_ttl

    def decode(self, record: Record) -> DecodedCommand:
        if record.topic.endswith(AGENT_COMMANDS):
            return attribute(self.verifier, record, read_agent_command(record.value))
        return attribute(self.verifier, record, read_ticket_command(record.value))

    def unreadable(self, record: Record, reason: str, detail: str) -> DecodedCommand:
        """Too large to read, or undecodable: an invalid command like any other."""
        target = "agent_id" if record.topic.endswith(AGENT_COMMANDS) else "ticket_number"
        return unreadable(record.value[:4096], f"{reason}: {detail}", target)

    async def owner(self, conn: Connection, record: Record) -> str | None:
        """A ticket command may carry what an agent wrote about the ticket's customer (a reply,
        a resolution): its dead letter is sealed under that customer, when it names a ticket
        dispatch knows. Agent commands say nothing about customers."""
        if record.topic.endswith(AGENT_COMMANDS):
            return None
        read = read_ticket_command(record.value)
        number = read.target if isinstance(read, Unreadable) else read.ticket_number
        if not number:
            return None
        for ticket in (await storage.tickets_by_number(conn, [number])).values():
            return ref_in(ticket.subject)
        return None

    def message_id(self, message: DecodedCommand, record: Record) -> str:
        if isinstance(message, Attributed):
            return f"command:{message.principal}:{message.command.command_id}"
        # Never a command id: a record nobody vouched for must not use up someone's id.
        return f"refused:{record.coordinates}"

    def answered_key(self, message: DecodedCommand, record: Record) -> str:
        """A refused signed command stays answered as the exact record its holder signed (its
        proof, an HMAC of the value under the token): a copy sent again at another offset —
        by anyone who can write the topic, for as long as the token lives — is skipped, not a
        second try that the ticket's state may by then let through. Sent again on purpose, a
        command is signed again with a new ``issued_at`` (the console does), so it differs."""
        if isinstance(message, Attributed):
            proof = dict(record.headers).get(PROOF_HEADER, b"").decode("ascii", "replace")
            return f"released:signed:{message.principal}:{proof}"
        return super().answered_key(message, record)

    def log_context(self, message: DecodedCommand) -> dict[str, object]:
        number = getattr(getattr(message, "command", message), "ticket_number", None)
        return {"ticket_number": number} if number else {}

    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[DecodedCommand]]) -> None:
        numbers = [
            getattr(getattr(m.message, "command", None), "ticket_number", "") for m in messages
        ]
        commands = [c for m in messages if (c := getattr(m.message, "command", None))]

        def groups(policy: Policy, tickets: Mapping[str, Ticket]) -> set[str]:
            by_number = {t.number: t for t in tickets.values()}
            found: set[str] = set()
            for command in commands:
                ticket = by_number.get(getattr(command, "ticket_number", ""))
                found |= reach.of_command(policy, command, ticket)
            return found

        # A ticket command frees at most one place; an agent's shift or capacity, any number.
        rosters = any(isinstance(c, AGENT_COMMAND_TYPES) for c in commands)
        frees = None if rosters else _FREES * len(commands)
        desk = await self.session.open(
            uow, numbers=[n for n in numbers if n], touches=groups, frees=frees
        )
        for inbound in messages:
            message = inbound.message
            agents = inbound.record.topic.endswith(AGENT_COMMANDS)
            kind = AgentCommandRejected if agents else TicketCommandRejected
            if isinstance(message, Unreadable):
                owner = await self._owner(uow.conn, message, agents=agents)
                _reject(uow, kind, message, inbound.record, owner)
                continue
            command = message.command
            target = (
                command.agent_id
                if isinstance(command, AGENT_COMMAND_TYPES)
                else command.ticket_number
            )
            if isinstance(message, Unattributed):
                _refuse(uow, kind, command, target, CommandRefusal(UNAUTHENTICATED, message.detail))
            elif refused := refusal(message, now=uow.now, max_ttl=self.max_ttl):
                ticket = desk.by_number(getattr(command, "ticket_number", ""))
                refused.status = ticket.status if ticket else None
                _refuse(uow, kind, command, target, refused)
                inbound.release()
            elif isinstance(command, AGENT_COMMAND_TYPES):
                desk.record = uow.caused_by(Cause(f"agent-{command.agent_id}", command.command_id))
                if refused := desk.agent_command(command):
                    _refuse(uow, kind, command, target, refused)
                    inbound.release()
            else:
                ticket = desk.by_number(command.ticket_number)
                correlation = ticket.ticket_id if ticket else command.ticket_number
                desk.record = uow.caused_by(Cause(correlation, command.command_id))
                if refused := desk.command(command):
                    _refuse(uow, kind, command, target, refused)
                    inbound.release()

    @staticmethod
    async def _owner(conn: Connection, unreadable: Unreadable, *, agents: bool) -> str | None:
        """Whose data an unreadable command's bytes may be (what an agent wrote about a
        customer): the customer of the ticket it names, if it names one dispatch knows."""
        if not unreadable.original or agents or not unreadable.target:
            return None
        for ticket in (await storage.tickets_by_number(conn, [unreadable.target])).values():
            return ref_in(ticket.subject)
        return None


def _refuse(
    uow: UnitOfWork,
    kind: type[CommandRejected],
    command: TicketCommand | AgentCommand,
    target: str,
    refusal: CommandRefusal,
) -> None:
    """Record a refusal; its actor only when a credential established one."""
    _record_rejection(
        uow,
        kind(
            command_id=command.command_id,
            command=command.type,
            target=target,
            actor=None if refusal.reason == UNAUTHENTICATED else command.actor,
            reason=refusal.reason,
            detail=refusal.detail,
            status=refusal.status,
        ),
        stream=f"rejection-{command.command_id}",
        correlation=command.command_id,
    )


def _reject(
    uow: UnitOfWork,
    kind: type[CommandRejected],
    unreadable: Unreadable,
    record: Record,
    ref: str | None,
) -> None:
    """Record an unreadable command; its first bytes sealed for ``ref``, the customer of the
    ticket it names. Without one they are left out — they may still be what an agent wrote
    about somebody, and only intake makes keys — and stay on the desk's own input topic, at the
    coordinates the rejection's stream names."""
    rejection = kind(
        command_id=unreadable.command_id,
        command=unreadable.command,
        target=unreadable.target,
        actor=unreadable.actor,
        reason=unreadable.reason,
        detail=unreadable.detail,
        original=unreadable.original if ref else None,
    )
    _record_rejection(
        uow,
        for_subject(rejection, ref) if ref else rejection,
        stream=f"rejection-{record.topic}-{record.partition}-{record.offset}",
        correlation=unreadable.command_id or record.coordinates,
    )


def _record_rejection(
    uow: UnitOfWork, rejection: CommandRejected, *, stream: str, correlation: str
) -> None:
    """Count, log and record a refused or unreadable command: it changes nothing else."""
    REFUSED.labels(type(rejection).event_name, rejection.reason).inc()
    log.warning(
        "command refused",
        command=rejection.command,
        command_id=rejection.command_id,
        target=rejection.target,
        actor=rejection.actor,
        reason=rejection.reason,
        detail=rejection.detail,
    )
    uow.caused_by(Cause(correlation))(stream, [rejection], expected_version=ANY_VERSION)

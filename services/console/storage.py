"""The console's read models: projections of its journal of public events.

Each is a :class:`shared.projection.Projection`, applied to a batch in the transaction that
journals it and rebuildable from the journal. A ticket's events come on four topics (intake's,
dispatch's, sla's, notify's) whose relative order the console cannot know, so every statement
holds whatever order they arrive in: intake's receipt and dispatch's classification each create
the ticket or add what they know, and a ticket's SLA state is recomputed from its clocks
whenever either side changes. Personal fields pass through :mod:`services.console.personal`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from services.console import personal
from services.dispatch import events as dispatch
from services.intake import events as intake
from services.notify import events as notify
from services.sla import events as sla
from shared.database import Connection
from shared.events import EventData
from shared.eventstore import RecordedEvent
from shared.keystore import KeyStore
from shared.personal import personal_fields
from shared.projection import Projection
from shared.provenance import catalogue

LOADED = ("assigned", "accepted", "in_progress", "waiting_for_customer")
"""Statuses in which a ticket holds its agent's capacity (as dispatch counts load)."""
OPEN_CLOCK = ("running", "paused")

SAID: dict[type[EventData], str] = {
    intake.CustomerReplied: "body",
    dispatch.TicketResponded: "message",
    dispatch.NoteAdded: "note",
    dispatch.WaitingForCustomer: "question",
    dispatch.TicketResolved: "resolution",
    dispatch.TicketReopened: "reason",
    dispatch.SatisfactionRecorded: "comment",
    dispatch.CustomerFlagged: "reason",
    dispatch.SpecialistRequested: "question",
    dispatch.FindingsProvided: "findings",
}
"""The field in which someone wrote something, per event: personal, kept apart (``said``, which
an erasure overwrites)."""
_SAID_TOO: dict[type[EventData], tuple[str, ...]] = {
    dispatch.TicketResolved: ("cause", "actions", "compensation"),
}
"""What else someone wrote in the event, shown after the said field (a complaint's solution)."""
_IDENTITY = frozenset({"ticket_id", "number"})


def _ticket_id(data: EventData) -> str | None:
    value = getattr(data, "ticket_id", None)
    return str(value) if value else None


class Tickets(Projection):
    """Every ticket's current state, and its timeline across the services."""

    name = "tickets"
    tables = ("tickets", "timeline")

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        rows: dict[str, list[Statement]] = {}
        upserted: set[str] = set()
        erased: list[str] = []
        timeline: list[tuple[Any, ...]] = []
        for recorded in await personal.opened(conn, self.keys, events):
            data = recorded.decode()
            if isinstance(data, intake.CustomerErased):
                erased.append(data.ref)
            ticket_id = _ticket_id(data)
            if ticket_id is None:
                continue
            change = _change(data, recorded.time)
            if change is not None:
                rows.setdefault(ticket_id, []).append(change)
                if change[0].startswith("INSERT"):
                    upserted.add(ticket_id)
            timeline.append(_timeline_row(recorded, data, ticket_id))
        await in_rounds(conn, rows)
        await _add_to_timelines(conn, timeline)
        # The clocks of a ticket may have come first: a row just made takes their state.
        await refresh_sla(conn, upserted)
        await personal.forget(conn, erased)


Statement = tuple[str, tuple[Any, ...]]
"""SQL and its arguments, changing one row of a read model."""


async def in_rounds(conn: Connection, rows: dict[str, list[Statement]]) -> None:
    """Each row's statements in their order, a batch's in few round trips: statements of
    different rows commute, so the n-th of every row go together, one pipelined
    ``executemany`` per SQL text. A statement per event, each its own round trip, was the
    console's largest cost after the timeline's."""
    depth = max((len(changes) for changes in rows.values()), default=0)
    for n in range(depth):
        together: dict[str, list[tuple[Any, ...]]] = {}
        for changes in rows.values():
            if n < len(changes):
                sql, args = changes[n]
                together.setdefault(sql, []).append(args)
        for sql, arguments in together.items():
            await conn.executemany(sql, arguments)


def _change(data: EventData, time: datetime) -> Statement | None:  # noqa: PLR0911, PLR0912
    """The statement applying one event to its ticket's row (an upsert is an ``INSERT``)."""
    match data:
        case intake.TicketReceived():
            return _upsert(
                data,
                time,
                **_request(data),
                customer_key=personal.customer_key(data.customer),
                customer=personal.stored_customer(data.customer),
                subject=personal.stored_text(data.subject),
                description=personal.stored_text(data.description),
                follows_up=data.follows_up,
            )
        case intake.FollowUpOpened():
            # Once, however often the event is applied (a projection rebuilt or replayed).
            return _set(
                data,
                time,
                "follow_ups = CASE WHEN $3 = ANY(follow_ups) THEN follow_ups "
                "ELSE array_append(follow_ups, $3) END",
                data.follow_up_number,
            )
        case intake.TicketTriaged() | dispatch.TicketClassified():
            extra = (
                {"group_id": data.group_id} if isinstance(data, dispatch.TicketClassified) else {}
            )
            return _upsert(
                data,
                time,
                **_request(data),
                complexity=data.complexity,
                category=data.category,
                complaint=data.complaint,
                subject=personal.stored_text(data.subject),
                **extra,
            )
        case dispatch.TicketAssigned():
            return _set(
                data,
                time,
                "status = 'assigned', group_id = $3, agent_id = $4, queued_at = NULL",
                data.group_id,
                data.agent_id,
            )
        case dispatch.TicketQueued():
            return _set(
                data,
                time,
                "status = 'queued', group_id = $3, agent_id = NULL, queued_at = $2",
                data.group_id,
            )
        case dispatch.TicketAccepted():
            return _set(data, time, "status = 'accepted'")
        case dispatch.WorkStarted() | dispatch.TicketResumed():
            return _set(data, time, "status = 'in_progress'")
        case dispatch.WaitingForCustomer():
            return _set(data, time, "status = 'waiting_for_customer'")
        case dispatch.TicketResponded() if data.first_response:
            return _set(
                data,
                time,
                "first_response_at = coalesce(first_response_at, $2), "
                "first_responder = coalesce(first_responder, $3)",
                data.agent_id,
            )
        case dispatch.TicketResolved():
            return _set(
                data,
                time,
                "status = 'resolved', resolved_at = $2, resolved_by = $3",
                data.agent_id,
            )
        case dispatch.TicketReopened():
            return _set(data, time, "status = 'in_progress', reopened = reopened + 1")
        case dispatch.TicketClosed():
            return _set(data, time, "status = 'closed', closed_at = $2")
        case dispatch.TicketReclassified():
            return _set(
                data,
                time,
                "complexity = $3, category = $4, complaint = $4 = 'complaint'",
                data.to_complexity,
                data.to_category,
            )
        case dispatch.TicketReassigned():
            return _set(data, time, "group_id = $3, agent_id = NULL", data.to_group)
        case dispatch.TicketEscalated():
            moved = ", group_id = $4, agent_id = NULL" if data.to_group is not None else ""
            return _set(
                data,
                time,
                f"escalation_level = greatest(escalation_level, $3){moved}",
                data.level,
                *([data.to_group] if data.to_group is not None else []),
            )
        case dispatch.SpecialistRequested():
            # As dispatch keeps it (Ticket.specialist_group): the group asked sees the ticket
            # until it answers, whatever else happens to the ticket meanwhile.
            return _set(data, time, "specialist_group = $3", data.to_group)
        case dispatch.FindingsProvided():
            return _set(data, time, "specialist_group = NULL")
        case dispatch.SatisfactionRecorded():
            return _set(
                data,
                time,
                "satisfaction = $3, satisfaction_comment = $4, satisfied_at = $2",
                data.score,
                personal.stored_text(data.comment),
            )
    return None


def _request(data: Any) -> dict[str, Any]:
    """What intake's receipt and triage and dispatch's classification all repeat of a request."""
    return {
        "received_at": data.received_at,
        "priority": data.priority,
        "channel": data.channel,
        "language": data.language,
        "product_line": data.product_line,
        "problem_type": data.problem_type,
    }


def _upsert(data: Any, time: datetime, **values: Any) -> Statement:
    """Create the ticket, or add what this event knows: a value it carries replaces the row's,
    except that a later ``received`` does not undo what dispatch decided."""
    columns = ["ticket_id", "number", "status", "updated_at", *values]
    params = (data.ticket_id, data.number, "received", time, *values.values())
    placeholders = ", ".join(f"${n}" for n in range(1, len(params) + 1))
    updates = ", ".join(f"{c} = coalesce(excluded.{c}, tickets.{c})" for c in values)
    return (
        f"INSERT INTO tickets ({', '.join(columns)}) VALUES ({placeholders}) "
        f"ON CONFLICT (ticket_id) DO UPDATE SET {updates}, "
        "updated_at = greatest(tickets.updated_at, excluded.updated_at)",
        params,
    )


def _set(data: Any, time: datetime, change: str, *values: Any) -> Statement:
    return (
        f"UPDATE tickets SET {change}, updated_at = greatest(updated_at, $2) WHERE ticket_id = $1",
        (data.ticket_id, time, *values),
    )


def _timeline_row(recorded: RecordedEvent, data: EventData, ticket_id: str) -> tuple[Any, ...]:
    kind = recorded.type.removeprefix("servicedesk.").rsplit(".v", 1)[0]
    # Every field that may hold personal data, by its type: opened here, it would stay in clear
    # in ``facts``, which an erasure does not touch (a complaint's cause and compensation did).
    facts = data.model_dump(mode="json", exclude=set(personal_fields(type(data)) | _IDENTITY))
    actor = getattr(data, "actor", None) or getattr(data, "agent_id", None)
    return (
        ticket_id,
        recorded.position,
        recorded.time,
        catalogue().get(recorded.type, "?"),
        kind,
        actor if isinstance(actor, str) else None,
        facts,
        personal.stored_text(_said(data)),
    )


def _said(data: EventData) -> str | None:
    field = SAID.get(type(data))
    if field is None:
        return None
    parts = [getattr(data, field)]
    for name in _SAID_TOO.get(type(data), ()):
        if value := getattr(data, name):
            parts.append(f"{name}: {value}")
    return "\n".join(parts)


async def _add_to_timelines(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """One pipelined statement for the whole batch: a statement per event, each its own round
    trip, was a fifth of the console's CPU in a burst. Rows are independent of each other."""
    if rows:
        await conn.executemany(
            "INSERT INTO timeline (ticket_id, position, at, service, kind, actor, facts, said) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            rows,
        )


async def refresh_sla(conn: Connection, ticket_ids: Iterable[str]) -> None:
    """A ticket's SLA state from its clocks: breached if one is, at risk if a running one was
    warned; the soonest running deadline."""
    wanted = list(set(ticket_ids))
    if not wanted:
        return
    await conn.execute(
        "UPDATE tickets t SET sla = c.state, sla_deadline = c.deadline FROM ("
        "  SELECT ticket_id, CASE WHEN bool_or(status = 'breached') THEN 'breached'"
        "    WHEN bool_or(status = ANY($2::text[]) AND warned > 0) THEN 'at_risk' ELSE 'ok' END"
        "    AS state, min(deadline) FILTER (WHERE status = ANY($2::text[])) AS deadline"
        "  FROM clocks WHERE ticket_id = ANY($1::uuid[]) GROUP BY ticket_id) c "
        "WHERE t.ticket_id = c.ticket_id",
        wanted,
        list(OPEN_CLOCK),
    )


class Clocks(Projection):
    """sla's clocks: running, paused, warned, breached, met; and each ticket's SLA state."""

    name = "clocks"
    tables = ("clocks", "clock_runs")

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        rows: dict[str, list[Statement]] = {}
        touched: set[str] = set()
        for recorded in events:
            data = recorded.decode()
            if isinstance(data, sla.ClockEvent):
                change = _clock(data)
                if change is not None:
                    rows.setdefault(str(data.clock_id), []).append(change)
                touched.add(data.ticket_id)
        await in_rounds(conn, rows)
        await refresh_sla(conn, touched)


def _clock(data: sla.ClockEvent) -> Statement | None:  # noqa: PLR0911 - one per event
    match data:
        case sla.ClockStarted():
            # A new run replaces the clock's row: the run it replaces is kept if it counts
            # (met or breached), for compliance counts every run.
            return (
                "WITH replaced AS (INSERT INTO clock_runs (clock_id, run, ticket_id, metric, "
                "group_id, status, breached_at, met_at, late, agent_id) SELECT clock_id, run, "
                "ticket_id, metric, group_id, status, breached_at, met_at, late, agent_id "
                "FROM clocks WHERE clock_id = $1 AND run < $6 "
                "AND coalesce(met_at, breached_at) IS NOT NULL "
                "ON CONFLICT (clock_id, run) DO NOTHING) "
                "INSERT INTO clocks (clock_id, ticket_id, metric, group_id, status, deadline, run, "
                "agent_id) VALUES ($1, $2, $3, $4, 'running', $5, $6, $7) "
                "ON CONFLICT (clock_id) DO UPDATE SET status = 'running', group_id = $4, "
                "deadline = $5, warned = 0, breached_at = NULL, met_at = NULL, late = false, "
                "run = $6, agent_id = $7",
                (
                    data.clock_id,
                    data.ticket_id,
                    data.metric,
                    data.group_id,
                    data.deadline,
                    data.run,
                    data.agent_id,
                ),
            )
        case sla.ClockPaused():
            return _clock_set(data, "status = 'paused'")
        case sla.ClockResumed():
            return _clock_set(data, "status = 'running', deadline = $2", data.deadline)
        case sla.ClockWarned():
            return _clock_set(
                data, "warned = greatest(warned, $2), deadline = $3", data.fraction, data.deadline
            )
        case sla.ClockBreached():
            # Who had it answers for the breach; met in time, whoever met it.
            return _clock_set(
                data,
                "status = 'breached', breached_at = $2, agent_id = $3",
                data.due_at,
                _answering(data),
            )
        case sla.ClockMet():
            return _clock_set(
                data,
                "status = 'met', met_at = $2, late = $3, "
                "agent_id = CASE WHEN breached_at IS NULL THEN $4 ELSE agent_id END",
                data.at,
                data.late,
                _answering(data),
            )
        case sla.ClockStopped():
            # A quiet period ended by an update counts as sla judged it (``in_time``): met, or
            # breached at its deadline, for the agent the stop names. A stop recorded before
            # sla judged them reads as met, by whoever has the ticket.
            judged = "$2 AND breached_at IS NULL AND met_at IS NULL"
            met = f"{judged} AND $4 IS NOT FALSE"
            return _clock_set(
                data,
                f"status = CASE WHEN {met} THEN 'met' WHEN {judged} THEN 'breached' "
                "ELSE 'stopped' END, "
                f"met_at = CASE WHEN {met} THEN $3 ELSE met_at END, "
                f"breached_at = CASE WHEN {judged} AND $4 IS FALSE THEN deadline "
                "ELSE breached_at END, "
                f"agent_id = CASE WHEN NOT ({judged}) THEN agent_id WHEN $4 IS NOT NULL THEN $5 "
                "ELSE (SELECT t.agent_id FROM tickets t WHERE t.ticket_id = clocks.ticket_id) END",
                data.reason == "updated",
                data.at,
                data.in_time,
                data.agent_id,
            )
    return None


def _answering(data: sla.AnsweredClockEvent) -> str | None:
    """The agent a clock's outcome counts for in the review: whoever had the ticket — not for a
    specialist request's clock, which the group asked answers for."""
    return None if data.specialists else data.agent_id


def _clock_set(data: sla.ClockEvent, change: str, *values: Any) -> Statement:
    return (f"UPDATE clocks SET {change} WHERE clock_id = $1", (data.clock_id, *values))


class Agents(Projection):
    """The directory as dispatch registered it, with shifts and capacities."""

    name = "agents"
    tables = ("agents",)

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        for recorded in events:
            data = recorded.decode()
            match data:
                case dispatch.AgentRegistered():
                    await conn.execute(
                        "INSERT INTO agents (agent_id, name, role, groups, capacity, on_shift, "
                        "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (agent_id) "
                        "DO UPDATE SET name = $2, role = $3, groups = $4, capacity = $5, "
                        "on_shift = $6, updated_at = $7",
                        data.agent_id,
                        data.name,
                        data.role,
                        data.groups,
                        data.capacity,
                        data.on_shift,
                        recorded.time,
                    )
                case dispatch.ShiftStarted() | dispatch.ShiftEnded():
                    on = isinstance(data, dispatch.ShiftStarted)
                    await _agent_set(conn, data.agent_id, "on_shift = $2", on, recorded.time)
                case dispatch.CapacityChanged():
                    await _agent_set(
                        conn, data.agent_id, "capacity = $2", data.capacity, recorded.time
                    )


async def _agent_set(
    conn: Connection, agent_id: str, change: str, value: Any, time: datetime
) -> None:
    await conn.execute(
        f"UPDATE agents SET {change}, updated_at = $3 WHERE agent_id = $1", agent_id, value, time
    )


class Traffic(Projection):
    """Requests, customer replies, rejections, refusals and notices, per minute."""

    name = "traffic"
    tables = ("traffic",)

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        counts: Counter[tuple[datetime, str, str]] = Counter()
        for recorded in events:
            data = recorded.decode()
            minute = recorded.time.replace(second=0, microsecond=0)
            match data:
                case intake.TicketReceived():
                    counts[minute, "request", ""] += 1
                case intake.CustomerReplied():
                    counts[minute, "reply", ""] += 1
                case intake.RequestRejected():
                    counts[minute, "request_rejected", data.reason] += 1
                case dispatch.CommandRejected():
                    counts[minute, "command_refused", data.reason] += 1
                case notify.NotificationSent():
                    counts[minute, "notice_sent", data.channel or ""] += 1
                case notify.NotificationFailed():
                    counts[minute, "notice_failed", data.reason] += 1
        if not counts:
            return
        keys = list(counts)
        await conn.execute(
            "INSERT INTO traffic (minute, kind, reason, count) "
            "SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::int[]) "
            "ON CONFLICT (minute, kind, reason) DO UPDATE SET count = traffic.count + "
            "excluded.count",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [counts[k] for k in keys],
        )


class Decisions(Projection):
    """dispatch's decision on each command the console sent: accepted when one of dispatch's
    events names it as its cause, refused when a rejection names it (accepted stands).

    Two senders may use one command id (dispatch keys commands by sender and id), and any writer
    of ``tickets.commands`` can send a record under another's pending id: so an acceptance
    counts only if the event is on the command's target's stream (the ticket's, the agent's),
    and a rejection only if it names the command's type and target, and its actor when it names
    one — dispatch's decision on *that* record must not show as the sender's."""

    name = "decisions"
    tables = ("decisions",)

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        found: list[_Decision] = []
        for recorded in events:
            data = recorded.decode()
            if isinstance(data, dispatch.CommandRejected) and data.command_id:
                found.append(
                    _Decision(
                        data.command_id, "refused", data.reason, data.detail, recorded.time,
                        data.command, data.target, data.actor,
                    )
                )  # fmt: skip
            elif recorded.causation_id and catalogue().get(recorded.type) == "dispatch":
                found.append(
                    _Decision(
                        recorded.causation_id, "accepted", at=recorded.time,
                        target=recorded.stream_id,
                    )
                )  # fmt: skip
        if not found:
            return
        # Per command, its first decision here that is its own, an acceptance before a refusal.
        await conn.execute(
            "INSERT INTO decisions (command_id, outcome, reason, detail, decided_at) "
            "SELECT DISTINCT ON (d.command_id) d.command_id, d.outcome, d.reason, d.detail, "
            "d.at FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
            "$5::timestamptz[], $6::text[], $7::text[], $8::text[]) WITH ORDINALITY "
            "AS d(command_id, outcome, reason, detail, at, type, target, actor, n) "
            "JOIN commands c USING (command_id) "
            "WHERE CASE WHEN d.outcome = 'accepted' THEN d.target = CASE c.kind "
            "WHEN 'agent' THEN 'agent-' || c.target ELSE (SELECT 'ticket-' || t.ticket_id "
            "FROM tickets t WHERE t.number = c.target) END "
            "ELSE d.type = c.type AND d.target = c.target "
            "AND (d.actor IS NULL OR d.actor = c.actor) END "
            "ORDER BY d.command_id, d.outcome = 'accepted' DESC, d.n "
            "ON CONFLICT (command_id) DO UPDATE SET outcome = excluded.outcome, reason = NULL, "
            "detail = NULL, decided_at = excluded.decided_at "
            "WHERE decisions.outcome = 'refused' AND excluded.outcome = 'accepted'",
            *(list(column) for column in zip(*found, strict=True)),
        )


class _Decision(NamedTuple):
    command_id: str
    outcome: str
    reason: str | None = None
    detail: str | None = None
    at: datetime | None = None
    type: str | None = None
    """What a rejection says it refused: the command's type, target and actor (for an
    acceptance, ``target`` is the stream of the event that names the command)."""
    target: str | None = None
    actor: str | None = None


def read_models(keys: KeyStore) -> list[Projection]:
    """Every projection of the journal, in the order they are applied."""
    return [Tickets(keys), Clocks(), Agents(), Traffic(), Decisions()]

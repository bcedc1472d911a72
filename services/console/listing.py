"""What the API reads: tickets (filtered, paged), one ticket with its timeline, queues, agents.

Every query takes the viewer's part of the desk (:mod:`services.console.visibility`) as a
condition, so a list never holds a ticket its reader may not see: :func:`visible` for the
tickets they see (their groups', their own, those asked of their groups), :func:`worked` for the
figures of their groups (queues, the dashboard), which a ticket asked of them does not join.
Lists are newest first and paged by a cursor (the last ticket's receipt time and number), which
stays fast however deep the page: each filter has its index (``sql/001_console.sql``; the
tickets asked of a group, ``sql/005_specialist_group.sql``).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.console import personal
from services.console.contract import (
    AgentView,
    ClockView,
    Customer,
    EarlierRequest,
    QueueView,
    TicketDetail,
    TicketPage,
    TicketSummary,
    TimelineEntry,
)
from services.console.storage import LOADED
from services.console.visibility import Viewer
from shared.database import Connection
from shared.events import plausible

MAX_PAGE = 200
MAX_NUMBER_CHARS = 60
"""A ticket number in a cursor is at most as long as one in a path."""
MIN_SEARCH_CHARS = 3
"""Letters or digits a subject search needs: the trigram index (``tickets_subject``) narrows
by runs of three, so fewer (or wildcards, spaces) match everything it holds and the search
reads the whole table."""
SEARCH_TIMEOUT = timedelta(seconds=2)
"""Longest a subject search may run (``statement_timeout``): a text the index narrows little
still reads much of the table, holding one of the pool's few connections meanwhile, and a loop
of them would leave every other caller waiting for one."""

_SUMMARY = (
    "number, ticket_id::text, status, group_id, agent_id, priority, complexity, category, "
    "complaint, channel, language, subject, customer, received_at, queued_at, "
    "first_response_at, resolved_at, closed_at, escalation_level, reopened, satisfaction, sla, "
    "sla_deadline, updated_at"
)


class BadCursor(ValueError):
    """An ``after`` cursor this API did not make."""


class SearchTooSlow(Exception):
    """A subject search ran past :data:`SEARCH_TIMEOUT`."""


def searchable(text: str | None) -> str | None:
    """The subject search ``text`` asks for, trimmed (None: no search); ValueError for one too
    short for the index to narrow (:data:`MIN_SEARCH_CHARS`)."""
    trimmed = (text or "").strip()
    if not trimmed:
        return None
    if sum(c.isalnum() for c in trimmed) < MIN_SEARCH_CHARS:
        raise ValueError(f"a subject search needs at least {MIN_SEARCH_CHARS} letters or digits")
    return trimmed


@dataclass
class TicketFilter:
    status: list[str] = field(default_factory=list)
    group: list[str] = field(default_factory=list)
    agent: str | None = None
    customer: str | None = None
    complexity: list[str] = field(default_factory=list)
    sla: list[str] = field(default_factory=list)
    text: str | None = None


class Conditions:
    """A WHERE clause and its parameters, built one condition at a time."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def add(self, clause: str, *values: Any) -> None:
        """``clause`` with ``{}`` for each value's placeholder."""
        names = []
        for value in values:
            self.params.append(value)
            names.append(f"${len(self.params)}")
        self.clauses.append(clause.format(*names))

    def one_of(self, column: str, values: list[str]) -> None:
        """``column`` is one of ``values``: an equality for one (an index on the column then
        reads in list order), ``ANY`` for several."""
        if len(values) == 1:
            self.add(f"{column} = {{}}", values[0])
        else:
            self.add(f"{column} = ANY({{}}::text[])", values)

    def sql(self) -> str:
        return " AND ".join(self.clauses) or "true"


def visible(conditions: Conditions, viewer: Viewer) -> None:
    """Only the tickets the viewer sees: their groups', their own, and those whose specialist
    request waits on one of their groups."""
    if viewer.groups is not None:
        conditions.add(
            "(group_id = ANY({0}::text[]) OR agent_id = {1} "
            "OR specialist_group = ANY({0}::text[]))",
            sorted(viewer.groups),
            viewer.subject,
        )


def worked(conditions: Conditions, viewer: Viewer) -> None:
    """Only the tickets of the viewer's groups and their own: the figures of their part of the
    desk (a ticket another group's owner asked them about is not their groups' work)."""
    if viewer.groups is not None:
        conditions.add(
            "(group_id = ANY({}::text[]) OR agent_id = {})", sorted(viewer.groups), viewer.subject
        )


def _summary(row: Any) -> dict[str, Any]:
    values = dict(row)
    stored_customer = personal.customer(values.pop("customer"))
    values["customer_name"] = stored_customer.name if stored_customer else None
    values["subject"] = personal.text(values["subject"]) or ""
    return values


async def tickets(
    conn: Connection, viewer: Viewer, wanted: TicketFilter, *, limit: int, after: str | None
) -> TicketPage:
    where = Conditions()
    visible(where, viewer)
    for column, values in (
        ("status", wanted.status),
        ("group_id", wanted.group),
        ("complexity", wanted.complexity),
        ("sla", wanted.sla),
    ):
        if values:
            where.one_of(column, values)
    if wanted.agent:
        where.add("agent_id = {}", wanted.agent)
    if wanted.customer:
        where.add("customer_key = ANY({}::text[])", personal.history_key(wanted.customer))
    if wanted.text:
        where.add("subject ILIKE {}", "%" + _escape_like(wanted.text) + "%")
    if after:
        received, number = _read_cursor(after)
        where.add("(received_at, number) < ({}, {})", received, number)
    size = max(1, min(limit, MAX_PAGE))
    query = (
        f"SELECT {_SUMMARY} FROM tickets WHERE {where.sql()} "
        f"ORDER BY received_at DESC, number DESC LIMIT {size + 1}"
    )
    if wanted.text:
        rows = await _search(conn, query, where.params)
    else:
        rows = await conn.fetch(query, *where.params)
    items = [TicketSummary(**_summary(r)) for r in rows[:size]]
    more = len(rows) > size
    return TicketPage(items=items, next=_cursor(items[-1]) if more and items else None)


async def _search(conn: Connection, query: str, params: list[Any]) -> list[Any]:
    """The rows of a subject search, run within :data:`SEARCH_TIMEOUT`
    (:class:`SearchTooSlow`)."""
    limit = int(SEARCH_TIMEOUT.total_seconds() * 1000)
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL statement_timeout = {limit}")
            return await conn.fetch(query, *params)
    except asyncpg.QueryCanceledError:
        raise SearchTooSlow(
            f"the subject search took longer than {SEARCH_TIMEOUT.total_seconds():g} s: search "
            "for a longer text, or narrow it with another filter (status, group)"
        ) from None


async def ticket(conn: Connection, number: str) -> tuple[TicketDetail, str | None] | None:
    """One ticket with its clocks and its timeline, in one round trip, and the group its
    specialist request waits on (the caller checks it may be seen)."""
    row = await conn.fetchrow(_DETAIL, number)
    if row is None:
        return None
    values = _summary(row)
    values.pop("clocks")
    values.pop("timeline")
    history = json.loads(values.pop("customer_history"))
    timeline = json.loads(row["timeline"])
    omitted = values.pop("timeline_total") - len(timeline)
    asked = values.pop("specialist_group")
    values["customer"] = _customer(row["customer"])
    values["description"] = personal.text(values["description"])
    values["satisfaction_comment"] = personal.text(values["satisfaction_comment"])
    detail = TicketDetail(
        **values,
        clocks=[ClockView(**c) for c in json.loads(row["clocks"])],
        timeline=[TimelineEntry(**{**t, "said": personal.text(t["said"])}) for t in timeline],
        timeline_omitted=omitted,
        customer_history=[
            EarlierRequest(**{**h, "subject": personal.text(h["subject"])}) for h in history
        ],
    )
    return detail, asked


@dataclass(frozen=True)
class TicketFacts:
    """What a command's visibility check and the survey page read of a ticket: a few columns,
    never its clocks or timeline, which grow with every reply (a customer's thousands of them
    must not make each command or survey build them all)."""

    group_id: str | None
    agent_id: str | None
    specialist_group: str | None
    """The group its specialist request waits on (None: no request open)."""
    language: str | None
    subject: str
    satisfaction: int | None
    status: str | None = None


async def ticket_facts(conn: Connection, number: str) -> TicketFacts | None:
    """:class:`TicketFacts` of one ticket, its subject opened (the caller checks it may be
    seen)."""
    row = await conn.fetchrow(
        "SELECT group_id, agent_id, specialist_group, language, subject, satisfaction, status "
        "FROM tickets WHERE number = $1",
        number,
    )
    if row is None:
        return None
    return TicketFacts(
        group_id=row["group_id"],
        agent_id=row["agent_id"],
        specialist_group=row["specialist_group"],
        language=row["language"],
        subject=personal.text(row["subject"]) or "",
        satisfaction=row["satisfaction"],
        status=row["status"],
    )


TIMELINE_SHOWN = 500
"""Timeline entries a ticket's detail holds, the newest: a customer writing thousands of replies
must not make every opening of their ticket build and send them all (``desk ticket show`` prints
the whole story)."""
TIMELINE_BYTES = 1 << 20
"""And at most about this much of them as stored (the newest entry always): 500 replies of
32 KiB each would still make an opening 16 MB to build and send."""

_SIZE = "(octet_length(facts::text) + coalesce(octet_length(said), 0))"
HISTORY_SHOWN = 20
"""The customer's other tickets a detail lists, the newest."""

_DETAIL = (
    f"SELECT {_SUMMARY}, description, product_line, problem_type, satisfaction_comment, "
    "specialist_group, follows_up, follow_ups, "
    "(SELECT coalesce(json_agg(c ORDER BY c.metric), '[]') FROM (SELECT metric, status, warned, "
    " deadline, breached_at, met_at, late FROM clocks WHERE ticket_id = t.ticket_id) c) "
    "AS clocks, "
    "(SELECT coalesce(json_agg(e ORDER BY e.at, e.position), '[]') FROM (SELECT at, position, "
    " service, kind, actor, facts, said FROM (SELECT *, "
    f" sum({_SIZE}) OVER (ORDER BY position DESC) - {_SIZE} AS newer FROM timeline "
    f" WHERE ticket_id = t.ticket_id ORDER BY position DESC LIMIT {TIMELINE_SHOWN}) w "
    f" WHERE newer < {TIMELINE_BYTES}) e) AS timeline, "
    "(SELECT count(*) FROM timeline WHERE ticket_id = t.ticket_id) AS timeline_total, "
    "(SELECT coalesce(json_agg(h ORDER BY h.received_at DESC), '[]') FROM (SELECT number, "
    " status, group_id, received_at, subject FROM tickets o WHERE o.customer_key = t.customer_key"
    f" AND o.ticket_id <> t.ticket_id ORDER BY received_at DESC LIMIT {HISTORY_SHOWN}) h) "
    "AS customer_history "
    "FROM tickets t WHERE number = $1"
)


async def summaries(
    conn: Connection, ticket_ids: list[str]
) -> list[tuple[TicketSummary, str | None]]:
    """The current state of these tickets (what the stream sends when they change), each with
    the group its specialist request waits on (who else sees it)."""
    rows = await conn.fetch(
        f"SELECT {_SUMMARY}, specialist_group FROM tickets WHERE ticket_id = ANY($1::uuid[])",
        ticket_ids,
    )
    changed = []
    for row in rows:
        values = _summary(row)
        asked = values.pop("specialist_group")
        changed.append((TicketSummary(**values), asked))
    return changed


def _customer(stored: str | None) -> Customer | None:
    found = personal.customer(stored)
    if found is None:
        return None
    return Customer(
        name=found.name,
        email=found.email,
        phone=found.phone,
        customer_id=found.customer_id,
        tier=found.tier,
    )


async def queues(conn: Connection, viewer: Viewer) -> list[QueueView]:
    where = Conditions()
    where.add("status <> 'closed'")
    worked(where, viewer)
    rows = await conn.fetch(
        "SELECT group_id, count(*) FILTER (WHERE status = 'queued') AS queued, "
        "min(queued_at) FILTER (WHERE status = 'queued') AS oldest_queued_at, count(*) AS open "
        f"FROM tickets WHERE {where.sql()} AND group_id IS NOT NULL GROUP BY group_id "
        "ORDER BY group_id",
        *where.params,
    )
    return [QueueView(**dict(r)) for r in rows]


async def agents(conn: Connection, viewer: Viewer) -> list[AgentView]:
    where = Conditions()
    if viewer.groups is not None:
        where.add(
            "(a.groups && {}::text[] OR a.agent_id = {})", sorted(viewer.groups), viewer.subject
        )
    where.params.append(list(LOADED))
    rows = await conn.fetch(
        "SELECT a.agent_id, a.name, a.role, a.groups, a.on_shift, a.capacity, "
        "(SELECT count(*) FROM tickets t WHERE t.agent_id = a.agent_id "
        f"AND t.status = ANY(${len(where.params)}::text[])) AS load "
        f"FROM agents a WHERE {where.sql()} ORDER BY a.agent_id",
        *where.params,
    )
    return [AgentView(**{**dict(r), "groups": list(r["groups"])}) for r in rows]


async def agent_groups(conn: Connection, agent_id: str) -> list[str] | None:
    found = await conn.fetchval("SELECT groups FROM agents WHERE agent_id = $1", agent_id)
    return list(found) if found is not None else None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _cursor(last: TicketSummary) -> str:
    raw = f"{last.received_at.isoformat()}|{last.number}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_cursor(text: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        received, number = raw.split("|", 1)
        # Only what _cursor makes: a moment the database can compare, a number it can hold.
        if "\x00" in number or len(number) > MAX_NUMBER_CHARS:
            raise ValueError("not a ticket number")
        return plausible(datetime.fromisoformat(received)), number
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise BadCursor("not a cursor of this list") from None

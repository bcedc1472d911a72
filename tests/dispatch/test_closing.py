"""Closing resolved tickets (services/dispatch/closing.py), through intake and dispatch on the
real broker and PostgreSQL with their clocks driven: a ticket resolved and left alone is closed
by the system once the policy's close_after (shipped: 7d) has passed — not before — and one the
customer reopened meanwhile stays open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from services.dispatch.app import MIGRATIONS
from services.dispatch.app import build as dispatch
from services.dispatch.desk import Desk
from services.dispatch.events import (
    CustomerReminded,
    LeftUnanswered,
    TicketAssigned,
    TicketClosed,
    TicketResolved,
    TicketResumed,
    WaitingForCustomer,
)
from services.dispatch.storage import resolved_before
from services.intake.app import build as intake
from shared.database import connect
from shared.deadletter import Record
from shared.migrations import migrate
from shared.service import Service
from shared.settings import Settings
from tests.dispatch.support import T0, desk, triaged
from tests.intake.requests import RECEIVED_AT, encode, valid
from tests.support.credentials import token
from tests.support.kafka import KafkaProbe
from tests.support.records import data, ticket_event
from tests.support.services import running
from tests.support.time import DrivenTime

DISPATCH = "dispatch.events"


@asynccontextmanager
async def _two_tickets(
    settings: Settings,
    kafka: KafkaProbe,
    then: str,
    second: dict[str, Any] | None = None,
    **fields: Any,
) -> AsyncIterator[tuple[DrivenTime, datetime, list[str]]]:
    """intake and dispatch with their clocks driven and the closing worker's rounds every
    100 ms; two tickets (the second's request changed by ``second``), each accepted by its agent
    and given the command ``then``. Yields the clock, when it started, and the two numbers in
    order."""
    driven = settings.replace(clock="driven", dispatch_close_interval="100ms")
    clock = DrivenTime(driven, "intake", "dispatch")
    start = datetime.fromisoformat(RECEIVED_AT) + timedelta(minutes=1)
    await clock.set(start)
    async with running(intake(driven)), running(dispatch(driven)):
        for message_id, changes in (("first", {}), ("second", second or {})):
            await kafka.publish("requests.incoming", encode(valid(message_id, **changes)))
        assigned = await kafka.await_records(DISPATCH, ticket_event("assigned"), count=2)
        for record in assigned:
            number, owner = data(record)["number"], data(record)["agent_id"]
            mine = token(driven, owner, now=start)
            await kafka.ticket_command(owner, number, "accept", token=mine)
            await kafka.ticket_command(owner, number, then, token=mine, **fields)
        yield clock, start, sorted(data(r)["number"] for r in assigned)


async def _customer_writes(
    kafka: KafkaProbe, clock: DrivenTime, at: datetime, number: str, outcome: str
) -> None:
    """The customer replies to ticket ``number`` at ``at``; dispatch records ``outcome``."""
    await clock.set(at)
    reply = valid("reply", reply_to_ticket=number, received_at=at.isoformat(), description="hi")
    await kafka.publish("requests.incoming", encode(reply))
    await kafka.await_records(DISPATCH, ticket_event(outcome))


async def _quiet_rounds(kafka: KafkaProbe) -> list[Record]:
    """Every record of dispatch.events once rounds of the 100 ms interval have gone by."""
    await asyncio.sleep(0.6)
    return await kafka.all_records(DISPATCH, settle=0.2)


@pytest.mark.asyncio
async def test_a_resolved_ticket_left_alone_is_closed_by_the_system_after_close_after(
    settings: Settings, kafka: KafkaProbe
) -> None:
    async with _two_tickets(settings, kafka, "resolve", resolution="fixed") as tickets:
        clock, start, (quiet, reopened) = tickets
        await kafka.await_records(DISPATCH, ticket_event("resolved"), count=2)
        await _customer_writes(kafka, clock, start + timedelta(days=1), reopened, "reopened")

        await clock.set(start + timedelta(days=7) - timedelta(minutes=1))
        early = [r for r in await _quiet_rounds(kafka) if ticket_event("closed")(r)]

        await clock.set(start + timedelta(days=7, minutes=1))
        [closed] = await kafka.await_records(DISPATCH, ticket_event("closed"))
        after = await _quiet_rounds(kafka)

    assert early == [], "not before close_after"
    assert data(closed)["number"] == quiet
    assert data(closed)["actor"] == "system"
    assert data(closed)["reason"] == "resolved 7d ago and not reopened"
    assert data(closed)["silent"] is False, "due a minute ago: the customer is told"
    assert [data(r)["number"] for r in after if ticket_event("closed")(r)] == [quiet], (
        "closed once; the reopened ticket stays open"
    )


@pytest.mark.asyncio
async def test_a_question_left_unanswered_is_resolved_by_the_system_then_closed(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """The shipped policy: a reminder after 3d waiting for the customer's reply, the resolution
    after 7d; the ticket is then closed like any resolved one, 7d later. One the customer
    answered goes on."""
    then = "request_customer_info"
    async with _two_tickets(settings, kafka, then, question="Which model?") as tickets:
        clock, start, (silent, answering) = tickets
        await kafka.await_records(DISPATCH, ticket_event("waiting_for_customer"), count=2)
        await _customer_writes(kafka, clock, start + timedelta(days=1), answering, "resumed")

        await clock.set(start + timedelta(days=3, minutes=1))
        [reminded] = await kafka.await_records(DISPATCH, ticket_event("customer_reminded"))

        await clock.set(start + timedelta(days=7) - timedelta(minutes=1))
        early = await _quiet_rounds(kafka)

        await clock.set(start + timedelta(days=7, minutes=1))
        [resolved] = await kafka.await_records(DISPATCH, ticket_event("resolved"))
        await clock.set(start + timedelta(days=14, minutes=2))
        [closed] = await kafka.await_records(DISPATCH, ticket_event("closed"))
        after = await _quiet_rounds(kafka)

    assert [r for r in early if ticket_event("resolved")(r)] == [], "not before 7d"
    assert (data(reminded)["number"], data(reminded)["waited"]) == (silent, "3d")
    assert data(reminded)["resolves_in"] == "4d"
    assert [data(r)["number"] for r in after if ticket_event("customer_reminded")(r)] == [silent]
    assert data(resolved)["number"] == silent
    assert data(resolved)["agent_id"] == "system"
    assert data(resolved)["resolution"]["ref"].startswith("cust-"), "sealed like a person's"
    assert data(resolved)["reason"] == "waited 7d for the customer's reply"
    assert data(resolved)["silent"] is False
    assert data(closed)["number"] == silent
    assert [data(r)["number"] for r in after if ticket_event("resolved")(r)] == [silent], (
        "resolved once; the answered ticket is still being worked"
    )


@pytest.mark.asyncio
async def test_a_complaint_left_unanswered_is_left_to_its_people_who_are_told_once(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """A complaint's resolution states its cause, actions and compensation, which the system
    cannot: at 7d it is not resolved, but its people hear that the question went unanswered —
    before, nobody heard of it again while it held its agent's place."""
    complaint = {"subject": "投诉：客服态度很差", "description": "电话客服态度很差，我要投诉。"}
    then = "request_customer_info"
    async with _two_tickets(settings, kafka, then, complaint, question="When?") as tickets:
        clock, start, _ = tickets
        asked = await kafka.await_records(DISPATCH, ticket_event("waiting_for_customer"), count=2)
        classified = await kafka.await_records(DISPATCH, ticket_event("classified"), count=2)
        [held] = [data(r)["number"] for r in classified if data(r)["category"] == "complaint"]
        [fault] = {data(r)["number"] for r in asked} - {held}

        await clock.set(start + timedelta(days=7) - timedelta(minutes=1))
        early = await _quiet_rounds(kafka)
        await clock.set(start + timedelta(days=7, minutes=1))
        [told] = await kafka.await_records(DISPATCH, ticket_event("left_unanswered"))
        after = await _quiet_rounds(kafka)

    assert [r for r in early if ticket_event("left_unanswered")(r)] == [], "not before 7d"
    assert (data(told)["number"], data(told)["waited"], data(told)["silent"]) == (held, "7d", False)
    assert [data(r)["number"] for r in after if ticket_event("left_unanswered")(r)] == [held]
    assert [data(r)["number"] for r in after if ticket_event("resolved")(r)] == [fault], (
        "the fault is resolved by the system, the complaint waits for a person"
    )


@pytest.mark.asyncio
async def test_a_reply_sent_in_time_is_read_before_the_ticket_is_settled(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """The customer answers an hour before the question's 7d are up, but dispatch reads the
    reply only later (down, or behind). Its closing round used to settle by its clock alone:
    the ticket was resolved as unanswered under the reply, its customer told so, and then
    reopened by the reply read late. Now the round waits until dispatch has read intake's
    events past the due moment."""
    driven = settings.replace(clock="driven", dispatch_close_interval="100ms")
    clock = DrivenTime(driven, "intake", "dispatch")
    start = datetime.fromisoformat(RECEIVED_AT) + timedelta(minutes=1)
    await clock.set(start)
    service = dispatch(driven)
    reading = _held(service)
    async with running(intake(driven)), running(service):
        await kafka.publish("requests.incoming", encode(valid("first")))
        [assigned] = await kafka.await_records(DISPATCH, ticket_event("assigned"))
        number, owner = data(assigned)["number"], data(assigned)["agent_id"]
        mine = token(driven, owner, now=start)
        await kafka.ticket_command(owner, number, "accept", token=mine)
        question = {"question": "Which model?"}
        await kafka.ticket_command(owner, number, "request_customer_info", token=mine, **question)
        await kafka.await_records(DISPATCH, ticket_event("waiting_for_customer"))

        reading.clear()  # dispatch reads nothing more of intake's events for now
        answered = start + timedelta(days=7) - timedelta(hours=1)
        await clock.set(answered)
        reply = valid("reply", reply_to_ticket=number, received_at=answered.isoformat())
        await kafka.publish("requests.incoming", encode(reply))
        await kafka.await_records("intake.events", ticket_event("customer_replied"))
        await clock.set(start + timedelta(days=7, minutes=1))
        unread = await _quiet_rounds(kafka)
        assert [r for r in unread if ticket_event("resolved")(r)] == [], "the reply is unread"

        reading.set()
        await kafka.await_records(DISPATCH, ticket_event("resumed"))
        after = await _quiet_rounds(kafka)

    settled = [r for r in after if ticket_event("resolved")(r) or ticket_event("reopened")(r)]
    assert settled == [], "the reply came first: the ticket is worked on, not resolved"


def _held(service: Service) -> asyncio.Event:
    """An event that, cleared, holds dispatch's reading of intake's (and sla's) events."""
    reading = asyncio.Event()
    reading.set()
    [runner] = [r for r in service.consumers if r.subscription.name == "events"]
    handle = runner.subscription.handle

    async def held(uow: Any, messages: Any) -> None:
        await reading.wait()
        await handle(uow, messages)

    runner.subscription.handle = held  # type: ignore[method-assign]
    return reading


def _resolved(ticket_desk: Desk, n: int, at: datetime) -> str:
    ticket_desk.now = at
    ticket_desk.classify(triaged(n))
    [ticket] = [t for t in ticket_desk.tickets.values() if t.number == f"REQ-2026-{n:06d}"]
    ticket.status, ticket.resolved_at = "resolved", at
    return ticket.ticket_id


def test_the_desk_closes_only_a_ticket_still_resolved_and_resolved_long_enough_ago() -> None:
    ticket_desk, recorded = desk()
    old = _resolved(ticket_desk, 1, T0)
    recent = _resolved(ticket_desk, 2, T0 + timedelta(days=3))
    ticket_desk.now = T0 + timedelta(days=7)

    assert ticket_desk.close_quiet(old) is True
    assert ticket_desk.close_quiet(old) is False, "closed already"
    assert ticket_desk.close_quiet(recent) is False, "resolved four days ago"
    assert ticket_desk.close_quiet("no-such-ticket") is False
    closed = recorded.events(TicketClosed)
    assert [(e.ticket_id, e.actor, e.silent) for e in closed] == [(old, "system", False)]
    assert ticket_desk.tickets[old].status == "closed"


def test_a_close_later_than_the_policys_silent_if_late_by_tells_nobody() -> None:
    """How late is a backlog is the policy's (routing.silent_if_late_by), not a constant."""
    ticket_desk, recorded = desk()
    routing = ticket_desk.policy.routing.model_copy(
        update={"silent_if_late_by": timedelta(hours=2)}
    )
    ticket_desk.policy = ticket_desk.policy.model_copy(update={"routing": routing})
    on_time, late = (
        _resolved(ticket_desk, 1, T0),
        _resolved(ticket_desk, 2, T0 - timedelta(hours=3)),
    )
    ticket_desk.now = T0 + timedelta(days=7, hours=1)

    assert ticket_desk.close_quiet(on_time) and ticket_desk.close_quiet(late)
    closed = {e.ticket_id: e.silent for e in recorded.events(TicketClosed)}
    assert closed == {on_time: False, late: True}, "due 1 h ago: told; 4 h ago: a backlog"


def _waiting(ticket_desk: Desk, n: int, since: datetime, **changes: Any) -> str:
    """A ticket of the tiny group (two agents of capacity 1) waiting for its customer."""
    ticket_desk.now = since
    ticket_desk.classify(triaged(n, product_line="tiny", **changes))
    [ticket] = [t for t in ticket_desk.tickets.values() if t.number == f"REQ-2026-{n:06d}"]
    ticket.apply(
        WaitingForCustomer(
            ticket_id=ticket.ticket_id,
            number=ticket.number,
            agent_id=ticket.agent_id or "",
            question="when?",
        ),
        since,
    )
    return ticket.ticket_id


def test_the_desk_resolves_a_ticket_left_unanswered_long_enough_and_frees_its_place() -> None:
    ticket_desk, recorded = desk()
    old = _waiting(ticket_desk, 1, T0)  # t1, in Chinese
    recent = _waiting(ticket_desk, 2, T0 + timedelta(days=3), language="en")  # t2
    ticket_desk.now = T0 + timedelta(days=4)
    ticket_desk.classify(triaged(3, product_line="tiny"))  # nobody has room: queued
    agent = ticket_desk.tickets[old].agent_id
    ticket_desk.now = T0 + timedelta(days=7)

    assert ticket_desk.resolve_unanswered(recent) is False, "waiting four days"
    assert ticket_desk.resolve_unanswered(old) is True
    assert ticket_desk.resolve_unanswered(old) is False, "resolved already"
    [resolved] = recorded.events(TicketResolved)
    assert (resolved.ticket_id, resolved.agent_id, resolved.silent) == (old, "system", False)
    assert resolved.resolution == "REQ-2026-000001：7d 内未收到答复，已解决。", "its language"
    assert resolved.reason == "waited 7d for the customer's reply"
    assert ticket_desk.tickets[old].status == "resolved"
    [served] = [e for e in recorded.events(TicketAssigned) if e.number == "REQ-2026-000003"]
    assert served.agent_id == agent, "the freed place goes to the queue's head"


def test_a_ticket_answered_or_needing_a_person_is_not_resolved_unanswered() -> None:
    ticket_desk, recorded = desk()
    answered = _waiting(ticket_desk, 1, T0)
    complaint = _waiting(ticket_desk, 2, T0, category="complaint")
    ticket = ticket_desk.tickets[answered]
    ticket.apply(
        TicketResumed(ticket_id=answered, number=ticket.number, cause="reply", cause_event_id="e"),
        T0 + timedelta(days=1),
    )
    ticket_desk.now = T0 + timedelta(days=30)

    assert ticket.waiting_since is None
    assert ticket_desk.resolve_unanswered(answered) is False, "the customer replied"
    assert ticket_desk.resolve_unanswered(complaint) is False, "a complaint states its cause"
    assert recorded.events(TicketResolved) == []


def _asked_again(ticket_desk: Desk, ticket_id: str) -> None:
    """The customer answers the ticket's question, and is asked a new one, now."""
    ticket = ticket_desk.tickets[ticket_id]
    ids = {"ticket_id": ticket_id, "number": ticket.number}
    ticket.apply(TicketResumed(**ids, cause="reply", cause_event_id="e"), ticket_desk.now)
    ticket.apply(WaitingForCustomer(**ids, agent_id="t1", question="and now?"), ticket_desk.now)


def test_the_customer_is_reminded_once_per_question_and_told_when_it_resolves() -> None:
    """The test policy: a reminder at 3d, the resolution at 7d — but none for a complaint."""
    ticket_desk, recorded = desk()
    fault = _waiting(ticket_desk, 1, T0)
    complaint = _waiting(ticket_desk, 2, T0, category="complaint")
    ticket_desk.now = T0 + timedelta(days=3) - timedelta(minutes=1)
    assert ticket_desk.remind_unanswered(fault) is False, "not before 3d"

    ticket_desk.now = T0 + timedelta(days=3)
    assert ticket_desk.remind_unanswered(fault) and ticket_desk.remind_unanswered(complaint)
    assert ticket_desk.remind_unanswered(fault) is False, "once per question"
    reminded = {
        e.ticket_id: (e.waited, e.resolves_in, e.silent) for e in recorded.events(CustomerReminded)
    }
    assert reminded == {fault: ("3d", "4d", False), complaint: ("3d", None, False)}

    _asked_again(ticket_desk, fault)
    assert ticket_desk.remind_unanswered(fault) is False, "the new question waits 3d again"
    ticket_desk.now += timedelta(days=3)
    assert ticket_desk.remind_unanswered(fault) is True


def test_a_complaint_left_unanswered_is_told_to_its_people_once_per_question() -> None:
    ticket_desk, recorded = desk()
    fault = _waiting(ticket_desk, 1, T0)
    complaint = _waiting(ticket_desk, 2, T0, category="complaint")
    ticket_desk.now = T0 + timedelta(days=7) - timedelta(minutes=1)
    assert ticket_desk.leave_unanswered(complaint) is False, "not before 7d"

    ticket_desk.now = T0 + timedelta(days=7)
    assert ticket_desk.leave_unanswered(fault) is False, "the system resolves a fault itself"
    assert ticket_desk.leave_unanswered(complaint) is True
    assert ticket_desk.leave_unanswered(complaint) is False, "once per question"
    [told] = recorded.events(LeftUnanswered)
    assert (told.ticket_id, told.waited, told.silent) == (complaint, "7d", False)
    assert ticket_desk.tickets[complaint].status == "waiting_for_customer"

    _asked_again(ticket_desk, complaint)
    assert ticket_desk.leave_unanswered(complaint) is False, "the new question waits 7d again"
    ticket_desk.now += timedelta(days=30)
    assert ticket_desk.leave_unanswered(complaint) is True
    assert recorded.events(LeftUnanswered)[-1].silent is True, "23 days late: a backlog"


def test_a_backlog_reminder_is_silent() -> None:
    ticket_desk, recorded = desk()
    stale = _waiting(ticket_desk, 1, T0)
    ticket_desk.now = T0 + timedelta(days=5)
    assert ticket_desk.remind_unanswered(stale)
    [reminder] = recorded.events(CustomerReminded)
    assert reminder.silent is True, "two days late: the resolution it would announce is near"


@pytest.mark.parametrize(
    ("make", "settle", "kind"),
    [
        (_resolved, Desk.close_quiet, TicketClosed),
        (_waiting, Desk.resolve_unanswered, TicketResolved),
    ],
    ids=["closing", "resolving unanswered"],
)
def test_a_backlog_is_settled_silently_a_ticket_just_due_is_not(
    make: Callable[[Desk, int, datetime], str],
    settle: Callable[[Desk, str], bool],
    kind: type[TicketClosed | TicketResolved],
) -> None:
    """The first round after an upgrade finds tickets resolved, or waiting, since months ago:
    their customers are not told (notify fires no rule on a silent event); one due an hour ago
    is announced. A backlog resolved unanswered is closed at once, never announced later."""
    ticket_desk, recorded = desk()
    now = T0 + timedelta(days=90)
    months = make(ticket_desk, 1, T0)
    hour = make(ticket_desk, 2, now - timedelta(days=7, hours=1))
    ticket_desk.now = now
    assert settle(ticket_desk, months) and settle(ticket_desk, hour)
    silent = {e.ticket_id: e.silent for e in recorded.events(kind)}
    assert silent == {months: True, hour: False}
    closed = {e.ticket_id: e.silent for e in recorded.events(TicketClosed)}
    assert (closed[months], closed.get(hour, False)) == (True, False)


@pytest.mark.asyncio
async def test_a_ticket_resolved_before_resolved_at_existed_is_found_for_closing(
    settings: Settings,
) -> None:
    """An upgrade from before migration 002 left resolved tickets without ``resolved_at``: the
    closing worker's query never found them, so they were never closed (nor their customers'
    retention begun). 011 takes their last change for it."""
    conn = await connect(settings.require_database_url())
    try:
        await migrate(conn, "upgraded", [m for m in MIGRATIONS if m.version <= 10])
        await conn.execute(
            "INSERT INTO upgraded.tickets (ticket_id, number, status, group_id, priority, "
            "priority_rank, language, complexity, category, complaint_severity, channel, subject, "
            "received_at, escalation_level, responded, version, updated_at) VALUES ($1, $2, "
            "'resolved', 'front-line', 'normal', 2, 'en', 'simple', 'inquiry', 'none', 'web', "
            "'s', $3, 0, true, 3, $3)",
            UUID(int=1),
            "REQ-2026-000001",
            T0,
        )
        await conn.execute("SET search_path = upgraded")
        assert await resolved_before(conn, T0 + timedelta(days=8), 10) == [], "before 011"
        await migrate(conn, "upgraded", MIGRATIONS)
        assert await resolved_before(conn, T0 + timedelta(days=8), 10) == [str(UUID(int=1))]
        assert await resolved_before(conn, T0 - timedelta(seconds=1), 10) == []
    finally:
        await conn.execute("DROP SCHEMA IF EXISTS upgraded CASCADE")
        await conn.close()

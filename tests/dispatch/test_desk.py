"""The lifecycle: allowed paths, and every refusal leaves the ticket as it was (pure)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter

from services.dispatch.commands import TicketCommand
from services.dispatch.desk import Desk
from services.dispatch.events import (
    CustomerFlagged,
    FindingsProvided,
    FollowUpRequested,
    SatisfactionRecorded,
    SpecialistRequested,
    TicketAssigned,
    TicketClassified,
    TicketEscalated,
    TicketReassigned,
    TicketReopened,
    TicketResolved,
    TicketResponded,
    TicketResumed,
)
from services.dispatch.ticket import Ticket
from services.intake.events import CustomerReplied
from tests.dispatch.support import T0, desk, triaged
from tests.support.events import escalation
from tests.support.recorded import Recorded

pytestmark = pytest.mark.unit

NUMBER = "REQ-2026-000001"
COMMAND = TypeAdapter[Any](TicketCommand)
_ids = iter(range(10**6))


def command(kind: str, actor: str, **fields: Any) -> Any:
    values = {"command_id": f"c{next(_ids)}", "type": kind, "ticket_number": NUMBER, "actor": actor}
    defaults = {
        "respond": {"message": "hello"},
        "add_note": {"note": "internal"},
        "request_customer_info": {"question": "which floor?"},
        "resolve": {"resolution": "replaced the drum"},
        "reopen": {"reason": "still jams"},
        "reassign": {"reason": "rebalancing", "to_agent": "f2"},
        "escalate": {"reason": "needs a manager"},
        "flag_customer": {"reason": "insults the agent"},
        "request_specialist": {"to_group": "tiny", "question": "is the drum worn?"},
        "provide_findings": {"findings": "the drum is worn"},
        "record_satisfaction": {"score": 4, "comment": "ok"},
    }
    values.update(defaults.get(kind, {}))  # type: ignore[call-overload]
    values.update(fields)
    return COMMAND.validate_python(values)


def fresh() -> tuple[Desk, Recorded, Ticket]:
    d, recorded = desk()
    d.classify(triaged(1, complexity="simple", category="inquiry"))  # -> front, agent f1
    ticket = d.by_number(NUMBER)
    assert ticket is not None
    assert ticket.agent_id == "f1"
    return d, recorded, ticket


def reply(ticket: Ticket, body: str = "still broken") -> CustomerReplied:
    return CustomerReplied(
        ticket_id=ticket.ticket_id,
        number=ticket.number,
        channel="email",
        channel_message_id=f"reply-{next(_ids)}@example.com",
        received_at=T0,
        subject=f"Re: {ticket.subject}",
        body=body,
    )


def status(ticket: Ticket) -> str:
    """The ticket's status now (a call, so the type checker does not keep an old narrowing)."""
    return ticket.status


def run(d: Desk, *steps: tuple[str, str]) -> None:
    for kind, actor in steps:
        assert d.command(command(kind, actor)) is None, (kind, actor)


ACCEPTED = (("accept", "f1"),)
IN_PROGRESS = (*ACCEPTED, ("start_work", "f1"))
RESOLVED = (*IN_PROGRESS, ("resolve", "f1"))
CLOSED = (*RESOLVED, ("close", "f1"))

CASES: list[tuple[str, tuple[tuple[str, str], ...], Callable[[], Any], str]] = [
    ("accept by someone else", (), lambda: command("accept", "f2"), "not_permitted"),
    ("accept by the customer", (), lambda: command("accept", "customer"), "not_permitted"),
    ("accept twice", ACCEPTED, lambda: command("accept", "f1"), "illegal_transition"),
    ("start work before accepting", (), lambda: command("start_work", "f1"), "illegal_transition"),
    ("respond before accepting", (), lambda: command("respond", "f1"), "illegal_transition"),
    ("respond as another agent", ACCEPTED, lambda: command("respond", "f2"), "not_permitted"),
    ("resolve before accepting", (), lambda: command("resolve", "f1"), "illegal_transition"),
    ("resolve as another agent", IN_PROGRESS, lambda: command("resolve", "f2"), "not_permitted"),
    (
        "ask the customer before accepting",
        (),
        lambda: command("request_customer_info", "f1"),
        "illegal_transition",
    ),
    (
        "ask the customer twice",
        (*IN_PROGRESS, ("request_customer_info", "f1")),
        lambda: command("request_customer_info", "f1"),
        "illegal_transition",
    ),
    (
        "reopen an unresolved ticket",
        IN_PROGRESS,
        lambda: command("reopen", "customer"),
        "illegal_transition",
    ),
    ("reopen as the agent", RESOLVED, lambda: command("reopen", "f1"), "not_permitted"),
    (
        "close an unresolved ticket",
        IN_PROGRESS,
        lambda: command("close", "f1"),
        "illegal_transition",
    ),
    ("close twice", CLOSED, lambda: command("close", "f1"), "illegal_transition"),
    ("note on a closed ticket", CLOSED, lambda: command("add_note", "f1"), "illegal_transition"),
    (
        "satisfaction before resolving",
        IN_PROGRESS,
        lambda: command("record_satisfaction", "customer"),
        "illegal_transition",
    ),
    (
        "satisfaction given by an agent",
        RESOLVED,
        lambda: command("record_satisfaction", "f1"),
        "not_permitted",
    ),
    (
        "satisfaction twice",
        (*RESOLVED, ("record_satisfaction", "customer")),
        lambda: command("record_satisfaction", "customer"),
        "already_recorded",
    ),
    (
        "reassign to another group, not a supervisor",
        ACCEPTED,
        lambda: command("reassign", "f1", to_agent=None, to_group="round"),
        "not_permitted",
    ),
    (
        "reassign by an agent not on the ticket",
        ACCEPTED,
        lambda: command("reassign", "f2"),
        "not_permitted",
    ),
    (
        "resolve a closed ticket, by an agent not on it: told who may, not what state it is in",
        CLOSED,
        lambda: command("resolve", "f2"),
        "not_permitted",
    ),
    (
        "reassign to an unknown agent",
        ACCEPTED,
        lambda: command("reassign", "f1", to_agent="nobody"),
        "unknown_agent",
    ),
    (
        "reassign to an unknown group",
        ACCEPTED,
        lambda: command("reassign", "boss", to_agent=None, to_group="nowhere"),
        "unknown_group",
    ),
    (
        "reassign to an agent off shift",
        ACCEPTED,
        lambda: command("reassign", "boss", to_agent="t3"),
        "agent_unavailable",
    ),
    ("reassign a closed ticket", CLOSED, lambda: command("reassign", "boss"), "illegal_transition"),
    (
        "an actor not in the directory",
        ACCEPTED,
        lambda: command("respond", "mallory"),
        "unknown_actor",
    ),
    (
        "a ticket that does not exist",
        (),
        lambda: command("accept", "f1", ticket_number="REQ-2026-999999"),
        "unknown_ticket",
    ),
    (
        "escalate with nobody above the supervisor who has it",
        (("escalate", "f1"),),  # to boss, who supervises the front line and the supervisors
        lambda: command("escalate", "boss"),
        "no_supervisor",
    ),
    (
        "flag the customer by an agent not on the ticket",
        ACCEPTED,
        lambda: command("flag_customer", "f2"),
        "not_permitted",
    ),
    (
        "ask an unknown group for findings",
        ACCEPTED,
        lambda: command("request_specialist", "f1", to_group="nowhere"),
        "unknown_group",
    ),
    (
        "ask for findings twice before the first answer",
        (*ACCEPTED, ("request_specialist", "f1")),
        lambda: command("request_specialist", "f1"),
        "specialist_pending",
    ),
    (
        "findings nobody asked for",
        ACCEPTED,
        lambda: command("provide_findings", "t1"),
        "no_specialist_request",
    ),
    (
        "findings from outside the group asked",
        (*ACCEPTED, ("request_specialist", "f1")),
        lambda: command("provide_findings", "r1"),
        "not_permitted",
    ),
    (
        "a standard reply the policy does not have",
        ACCEPTED,
        lambda: command("respond", "f1", message=None, template="no_such_reply"),
        "unknown_template",
    ),
    (
        "a supervisor of another group",  # dir supervises the directors, not the front line
        ACCEPTED,
        lambda: command("respond", "dir"),
        "not_permitted",
    ),
]


@pytest.mark.parametrize(("case", "setup", "make", "reason"), CASES, ids=[c[0] for c in CASES])
def test_a_refused_command_changes_nothing(
    case: str, setup: tuple[tuple[str, str], ...], make: Callable[[], Any], reason: str
) -> None:
    d, recorded, _ = fresh()
    if case == "reassign to an agent off shift":
        d.board.agents["t3"].profile = d.board.agents["t3"].profile.model_copy(
            update={"groups": ["front", "tiny"]}
        )
    run(d, *setup)
    before, records = copy.deepcopy(d.by_number(NUMBER)), len(recorded.records)
    loads = {a: s.load for a, s in d.board.agents.items()}
    refusal = d.command(make())
    assert refusal is not None, case
    assert refusal.reason == reason, (case, refusal)
    assert refusal.detail
    assert d.by_number(NUMBER) == before, "the ticket changed"
    assert len(recorded.records) == records, "an event was recorded"
    assert {a: s.load for a, s in d.board.agents.items()} == loads


def test_the_table_has_at_least_25_refusals() -> None:
    assert len(CASES) >= 25


def test_a_ticket_goes_through_its_whole_life() -> None:
    d, recorded, ticket = fresh()
    run(d, ("accept", "f1"), ("respond", "f1"), ("start_work", "f1"), ("respond", "f1"))
    responses = recorded.events(TicketResponded)
    assert [r.first_response for r in responses] == [True, False]
    run(d, ("request_customer_info", "f1"))
    assert status(ticket) == "waiting_for_customer"
    d.customer_replied(reply(ticket), "reply-event")
    assert status(ticket) == "in_progress"
    assert recorded.events(TicketResumed)[0].cause_event_id == "reply-event"
    run(d, ("resolve", "f1"))
    assert (status(ticket), d.board.agents["f1"].load) == ("resolved", 0)
    run(d, ("reopen", "customer"))
    assert (status(ticket), ticket.agent_id, d.board.agents["f1"].load) == ("in_progress", "f1", 1)
    assert recorded.events(TicketReopened)
    run(d, ("resolve", "boss"), ("close", "customer"), ("record_satisfaction", "customer"))
    assert status(ticket) == "closed"
    assert recorded.events(SatisfactionRecorded)[0].score == 4
    versions = [
        expected for stream, _, expected in recorded.records if stream.endswith(ticket.ticket_id)
    ]
    known = [v for v in versions if v is not None]
    assert known == versions, "a ticket's events always name the version they follow"
    assert known == sorted(known), "each record continues the stream"


def test_a_reassignment_frees_the_old_agent_and_serves_the_queue() -> None:
    d, recorded = desk()
    for n in (1, 2, 3):
        d.classify(triaged(n, product_line="tiny"))  # t1, t2, then queued
    assert d.board.agents["t1"].load == 1
    refusal = d.command(
        command(
            "reassign", "boss", ticket_number="REQ-2026-000001", to_agent=None, to_group="front"
        )
    )
    assert refusal is None
    moved = recorded.events(TicketReassigned)[0]
    assert (moved.from_agent, moved.to_group) == ("t1", "front")
    assigned = [(e.number, e.agent_id, e.cause) for e in recorded.events(TicketAssigned)]
    assert ("REQ-2026-000001", "f1", "reassigned") in assigned
    assert ("REQ-2026-000003", "t1", "queue") in assigned, "t1's room went to the queue"


def test_sla_escalations_climb_the_ladder_once_per_level() -> None:
    d, recorded, ticket = fresh()
    for level in (1, 2, 2, 3):
        d.escalation(escalation(ticket.ticket_id, NUMBER, level), f"event-{level}")
    escalations = recorded.events(TicketEscalated)
    assert [(e.level, e.to_group) for e in escalations] == [
        (1, None),
        (2, "supervisors"),
        (3, "directors"),
    ]
    assert escalations[0].supervisors == ["boss"]
    assert escalations[1].cause == "sla:first_response"
    assert (ticket.group_id, ticket.agent_id) == ("directors", "dir")
    assert d.board.agents["f1"].load == 0


def test_a_major_complaint_with_a_director_stays_there_at_every_level() -> None:
    d, recorded = desk()
    d.classify(triaged(1, category="complaint", complaint=True, complaint_severity="major"))
    ticket = d.by_number(NUMBER)
    assert ticket is not None
    assert (ticket.group_id, ticket.agent_id) == ("directors", "dir")
    for level in (1, 2, 3):
        raised = escalation(ticket.ticket_id, NUMBER, level, "complaint_first_contact")
        d.escalation(raised, f"event-{level}")
    escalations = recorded.events(TicketEscalated)
    assert [(e.level, e.to_group) for e in escalations] == [(1, None), (2, None), (3, None)]
    assert (ticket.group_id, ticket.agent_id, ticket.escalation_level) == ("directors", "dir", 3)
    assert recorded.events(TicketReassigned) == []
    assert len(recorded.events(TicketAssigned)) == 1
    assert d.board.agents["dir"].load == 1


def resolved_at_t0() -> tuple[Desk, Recorded, Ticket]:
    d, recorded, ticket = fresh()
    run(d, ("accept", "f1"), ("resolve", "f1"))
    assert ticket.resolved_at == T0
    return d, recorded, ticket


@pytest.mark.parametrize(
    ("days_later", "reopened"), [(0, True), (6.9, True), (7, True), (7.01, False), (30, False)]
)
def test_a_reply_reopens_a_resolved_ticket_within_the_window_else_asks_for_a_follow_up(
    days_later: float, reopened: bool
) -> None:
    d, recorded, ticket = resolved_at_t0()
    d.now = T0 + timedelta(days=days_later)  # the policy's reopen_window: 7d
    d.customer_replied(reply(ticket, "still broken"), "reply-event")
    if reopened:
        [event] = recorded.events(TicketReopened)
        assert (event.actor, event.reason) == ("customer", "customer replied: still broken")
        assert status(ticket) == "in_progress"
        assert not recorded.events(FollowUpRequested)
    else:
        [follow_up] = recorded.events(FollowUpRequested)
        assert (follow_up.reason, follow_up.body) == ("reopen_window_passed", "still broken")
        assert follow_up.reply_event_id == "reply-event"
        assert status(ticket) == "resolved", "the old ticket stays as it was"
        assert not recorded.events(TicketReopened)


def test_a_reply_written_before_the_resolution_and_read_after_it_does_not_reopen() -> None:
    """The customer answered while the agent resolved; dispatch read the resolve command first
    (another topic): the answer belongs to before the resolution (found by a fresh clone's test
    run: the ticket reopened with the old answer as its reason)."""
    d, recorded, ticket = resolved_at_t0()
    d.now = T0 + timedelta(minutes=1)
    before = reply(ticket, "Tray 2.").model_copy(update={"received_at": T0 - timedelta(seconds=5)})
    d.customer_replied(before, "reply-event")
    assert status(ticket) == "resolved"
    assert not recorded.events(TicketReopened) and not recorded.events(FollowUpRequested)
    d.customer_replied(reply(ticket, "still broken"), "reply-event-2")  # written as it was resolved
    [event] = recorded.events(TicketReopened)
    assert event.reason == "customer replied: still broken"


def test_a_reply_written_before_the_systems_resolution_reopens_it() -> None:
    """The system resolved for want of a reply the customer had sent (its adapter's time is
    before the resolution; intake recorded it after): that resolution was wrong, the reply
    reopens it."""
    d, recorded, ticket = fresh()
    run(d, ("accept", "f1"))
    ids = {"ticket_id": ticket.ticket_id, "number": ticket.number}
    ticket.apply(TicketResolved(**ids, agent_id="system", resolution="No reply: resolved."), T0)
    d.now = T0 + timedelta(minutes=1)
    answer = reply(ticket, "Version 4.2.").model_copy(
        update={"received_at": T0 - timedelta(seconds=30)}
    )
    d.customer_replied(answer, "reply-event")
    [event] = recorded.events(TicketReopened)
    assert event.reason == "customer replied: Version 4.2."
    assert status(ticket) == "in_progress" and not ticket.resolved_by_system


@pytest.mark.parametrize(("days_later", "reopened"), [(6.9, True), (7.01, False)])
def test_the_customers_reopen_holds_to_the_reopen_window_as_a_reply_does(
    days_later: float, reopened: bool
) -> None:
    """The survey link's reopen may outlive the window (its token's lifetime is the service's
    setting, the window the policy's): past it, refused as the reply would have been."""
    d, recorded, ticket = resolved_at_t0()
    d.now = T0 + timedelta(days=days_later)
    refusal = d.command(command("reopen", "customer"))
    if reopened:
        assert refusal is None and status(ticket) == "in_progress"
    else:
        assert refusal is not None and refusal.reason == "reopen_window_passed"
        assert status(ticket) == "resolved" and not recorded.events(TicketReopened)
    # A supervisor may still reopen it, whenever.
    if not reopened:
        assert d.command(command("reopen", "boss")) is None


def test_a_reply_to_a_closed_ticket_asks_for_a_follow_up_and_to_an_open_one_changes_nothing() -> (
    None
):
    d, recorded, ticket = resolved_at_t0()
    run(d, ("close", "customer"))
    d.customer_replied(reply(ticket), "reply-event")
    [follow_up] = recorded.events(FollowUpRequested)
    assert (follow_up.reason, status(ticket)) == ("closed", "closed")

    d, recorded, ticket = fresh()
    run(d, ("accept", "f1"))
    before = len(recorded.records)
    d.customer_replied(reply(ticket), "reply-event")
    assert len(recorded.records) == before, "the assignee is told by notify; the state stays"


def test_escalate_hands_the_ticket_to_the_groups_supervisor_at_every_level() -> None:
    d, recorded, ticket = fresh()
    run(d, *ACCEPTED, ("escalate", "f1"))
    [escalated] = recorded.events(TicketEscalated)
    assert (escalated.level, escalated.to_agent, escalated.to_group) == (1, "boss", "supervisors")
    assert (ticket.agent_id, ticket.status, ticket.escalation_level) == ("boss", "assigned", 1)
    assert (d.board.agents["f1"].load, d.board.agents["boss"].load) == (0, 1)
    assigned = recorded.events(TicketAssigned)[-1]
    assert (assigned.agent_id, assigned.cause) == ("boss", "escalated")


def test_a_flagged_customer_goes_to_the_supervisor_and_is_flagged_on_their_next_ticket() -> None:
    d, recorded = desk()
    d.classify(triaged(1, complexity="simple", category="inquiry", customer_key="email:a@x"))
    run(d, *ACCEPTED, ("flag_customer", "f1"))
    [flag] = recorded.events(CustomerFlagged)
    assert (flag.actor, flag.reason, flag.customer_key) == ("f1", "insults the agent", "email:a@x")
    assert d.by_number(NUMBER).agent_id == "boss"  # type: ignore[union-attr]
    assert recorded.events(TicketReassigned)[-1].reason == "customer flagged: insults the agent"
    d.classify(triaged(2, customer_key="email:a@x"))
    d.classify(triaged(3, customer_key="email:b@x"))
    flags = {e.number: e.customer_flag for e in recorded.events(TicketClassified)}
    assert flags == {NUMBER: None, "REQ-2026-000002": "insults the agent", "REQ-2026-000003": None}


def test_a_specialist_request_leaves_the_ticket_with_its_owner_until_the_findings() -> None:
    d, recorded, ticket = fresh()
    run(d, *ACCEPTED, ("request_specialist", "f1"))
    assert (ticket.agent_id, ticket.specialist_group) == ("f1", "tiny")
    assert recorded.events(SpecialistRequested)[0].agent_id == "f1"
    run(d, ("provide_findings", "t2"))  # any member of the group asked
    [found] = recorded.events(FindingsProvided)
    assert (found.actor, found.from_group, found.findings) == ("t2", "tiny", "the drum is worn")
    assert (ticket.agent_id, ticket.specialist_group) == ("f1", None)
    run(d, ("request_specialist", "f1"))  # and may ask again
    # The group asked is late, at every level: the ticket stays with its owner, and the
    # customer hears of no escalation (notify tells the group asked and its supervisors).
    for level in (1, 2, 3):
        late = escalation(ticket.ticket_id, NUMBER, level, "specialist_findings")
        d.escalation(late.model_copy(update={"specialists": True}), f"late-{level}")
    assert recorded.events(TicketEscalated) == []
    assert (ticket.group_id, ticket.agent_id, ticket.escalation_level) == ("front", "f1", 0)


def test_a_complaint_resolves_only_with_cause_actions_and_compensation() -> None:
    d, recorded = desk()
    d.classify(triaged(1, complexity="simple", category="complaint", complaint=True,
                       complaint_severity="ordinary"))  # fmt: skip
    run(d, *ACCEPTED)
    refusal = d.command(command("resolve", "f1", cause="a new colleague", actions="trained"))
    assert refusal is not None
    assert (refusal.reason, refusal.detail) == (
        "resolution_incomplete",
        "a complaint is resolved with cause, actions, compensation: compensation missing",
    )
    full = {"cause": "a new colleague", "actions": "trained", "compensation": "a month free"}
    assert d.command(command("resolve", "f1", **full)) is None
    [resolved] = recorded.events(TicketResolved)
    assert (resolved.cause, resolved.actions, resolved.compensation) == tuple(full.values())


def test_a_standard_reply_is_rendered_in_the_tickets_language_or_the_default() -> None:
    d, recorded = desk()
    d.classify(triaged(1, complexity="simple", category="inquiry", language="zh-CN"))
    d.classify(triaged(2, complexity="simple", category="inquiry", language="fr"))
    for number in (NUMBER, "REQ-2026-000002"):
        ticket = d.by_number(number)
        assert ticket is not None and ticket.agent_id is not None
        agent = ticket.agent_id
        assert d.command(command("accept", agent, ticket_number=number)) is None
        reply = command("respond", agent, ticket_number=number, message=None, template="ask")
        assert d.command(reply) is None
    zh, fr = recorded.events(TicketResponded)
    assert (zh.message, zh.language, zh.template) == (
        f"关于 {NUMBER}：发生了什么，什么时候？",
        "zh",
        "ask",
    )
    assert (fr.message, fr.language) == ("About REQ-2026-000002: what happened, and when?", "en")


def follow_up_of(ticket: Ticket, **changes: Any) -> Any:
    """The follow-up intake opens from a reply to ``ticket`` (as simple, so: the front line)."""
    values: dict[str, Any] = {"complexity": "simple", "category": "inquiry"}
    return triaged(2, follows_up=ticket.number, **{**values, **changes})


def test_a_follow_up_goes_back_to_the_agent_of_the_ticket_it_follows_up() -> None:
    d, recorded, ticket = resolved_at_t0()
    run(d, ("close", "customer"))
    d.classify(follow_up_of(ticket))  # the group's turn is f2's (f1 had the last ticket)
    [*_, assigned] = recorded.events(TicketAssigned)
    assert (assigned.number, assigned.agent_id) == ("REQ-2026-000002", "f1")
    assert assigned.reason.startswith(f"follows up {NUMBER}, back to its agent;"), assigned


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("the agent is full", "f2"),
        ("the agent is off shift", "f2"),
        ("the follow-up belongs to another group", "r1"),
        ("the policy routes follow-ups as new tickets", "f2"),
    ],
)
def test_a_follow_up_is_routed_like_a_new_ticket_when_its_old_agent_cannot_take_it(
    case: str, expected: str
) -> None:
    d, recorded, ticket = resolved_at_t0()
    run(d, ("close", "customer"))
    changes: dict[str, Any] = {}
    if case == "the agent is full":
        d.board.agents["f1"].load = d.board.agents["f1"].capacity
    elif case == "the agent is off shift":
        d.board.agents["f1"].on_shift = False
    elif case == "the follow-up belongs to another group":
        changes = {"complexity": "general", "category": "fault", "product_line": "rr"}
    else:
        routing = d.policy.routing.model_copy(update={"follow_ups_to_last_agent": False})
        d.policy = d.policy.model_copy(update={"routing": routing})
    d.classify(follow_up_of(ticket, **changes))
    [*_, assigned] = recorded.events(TicketAssigned)
    assert (assigned.number, assigned.agent_id) == ("REQ-2026-000002", expected), case
    assert "follows up" not in assigned.reason

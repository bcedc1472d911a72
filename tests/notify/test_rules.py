"""Which notices an event gives, to whom, in which language, over which channel. Pure."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from services.dispatch.commands import TicketCommand
from services.dispatch.desk import Desk, board_from
from services.dispatch.events import (
    TicketAssigned,
    TicketClosed,
    TicketQueued,
    TicketReassigned,
    TicketReopened,
    TicketResolved,
)
from services.dispatch.ticket import Ticket
from services.intake.events import CustomerReplied
from services.notify.channels import mask, sign, subject_with_number
from services.notify.events import mail_message_id, ticket_of_mail
from services.notify.rules import NoticeFacts, evolve, fires, notices, recipients, waits
from services.notify.storage import Delivery
from services.policy import DEFAULT_POLICY, Policy
from shared.policyfile import load_policy
from tests.dispatch.support import triaged
from tests.sla.support import T0
from tests.support.policies import parsed, shipped, without_groups
from tests.support.recorded import Recorded

pytestmark = pytest.mark.unit

POLICY, _ = load_policy(Path(DEFAULT_POLICY), Policy)
COMMAND = TypeAdapter[Any](TicketCommand)


def facts(**changes: object) -> NoticeFacts:
    values: dict[str, object] = {
        "ticket_id": "t-1",
        "number": "REQ-2026-000001",
        "subject": "Printer jam",
        "received_at": T0,
        "customer_name": "Ann",
        "email": "ann@example.com",
        "language": "en",
        "group_id": "front-line",
        "agent_id": "li.na",
    }
    values.update(changes)
    return NoticeFacts.model_validate(values)


def test_the_acknowledgement_names_number_and_expected_time_in_the_customers_language() -> None:
    [ack] = notices(POLICY, facts(language="zh-CN"), "ticket.triaged", {}, "e-1")
    assert (ack.channel, ack.address, ack.language) == ("email", "ann@example.com", "zh")
    assert ack.subject == "您的服务请求 REQ-2026-000001 已受理"
    # T0 is Friday 16:00 in Shanghai: a general request is answered within 2 business hours.
    assert "2026-11-20 18:00 (Asia/Shanghai)" in ack.body
    assert ack.notice_key == "e-1:customer:acknowledgement"
    [english] = notices(POLICY, facts(language="fr"), "ticket.triaged", {}, "e-1")
    assert english.language == "en" and english.subject.startswith("Your request")


def test_the_resolution_notice_carries_the_survey_link_of_its_ticket() -> None:
    asked: list[str] = []

    def survey(number: str) -> dict[str, str]:
        asked.append(number)
        return {"console_url": "https://console.example.com", "token": "a.b.c"}

    resolved = {"resolution": "Replaced"}
    [notice] = notices(POLICY, facts(), "ticket.resolved", resolved, "e-2", survey=survey)
    assert "https://console.example.com/survey/REQ-2026-000001#token=a.b.c" in notice.body
    assert "Replaced" in notice.body
    assert asked == ["REQ-2026-000001"]
    # Agents' notices carry no customer token.
    notices(POLICY, facts(), "ticket.assigned", {"agent_id": "li.na"}, "e-3", survey=survey)
    assert asked == ["REQ-2026-000001"]


def test_a_complaints_resolution_tells_the_customer_its_cause_actions_and_compensation() -> None:
    """sop.md: solutions to complaints state the cause, the actions taken and any compensation —
    to the customer, not only in the ticket."""
    complaint = {
        "resolution": "We apologise.",
        "cause": "a new colleague misread the contract",
        "actions": "the colleague was retrained",
        "compensation": "one month free",
    }
    [notice] = notices(POLICY, facts(language="en"), "ticket.resolved", complaint, "e")
    lines = notice.body.splitlines()
    assert "Cause: a new colleague misread the contract" in lines
    assert "What we did: the colleague was retrained" in lines
    assert "Compensation: one month free" in lines
    [chinese] = notices(POLICY, facts(language="zh"), "ticket.resolved", complaint, "e")
    assert "补偿：one month free" in chinese.body.splitlines()
    [plain] = notices(POLICY, facts(language="en"), "ticket.resolved", {"resolution": "Fixed"}, "e")
    assert not any(
        line.startswith(("Cause", "What we did", "Compensation"))
        for line in plain.body.splitlines()
    )
    assert len(plain.body.splitlines()) == 2, plain.body


def test_preferences_fall_back_and_no_contact_is_a_recorded_failure() -> None:
    [sms] = notices(POLICY, facts(email=None, phone="+8613800000000"), "ticket.closed", {}, "e")
    assert (sms.channel, sms.failure) == ("sms", None)
    [none] = notices(POLICY, facts(email=None), "ticket.closed", {}, "e-3")
    assert (none.channel, none.failure) == (None, "no_contact")
    assert "email, sms" in none.error


def test_escalation_levels_reach_the_ladder_recipients() -> None:
    level_1 = notices(POLICY, facts(), "sla.escalated", {"level": 1, "agent_id": "li.na"}, "e")
    assert sorted(n.recipient for n in level_1) == ["agent:li.na", "agent:zhao.lei"]
    level_3 = notices(POLICY, facts(), "sla.escalated", {"level": 3}, "e")
    assert [n.recipient for n in level_3] == ["agent:sun.yu"]


def test_every_notice_waits_for_the_receipt() -> None:
    """Before the receipt the customer has no contact and the ticket no subject: an agent's
    notice made then would read "New ticket N: " — so it waits as the customer's does."""
    unknown = NoticeFacts(ticket_id="t", number="N", received=False, agent_id="li.na")
    assert notices(POLICY, unknown, "ticket.closed", {}, "e") == []
    assert waits(POLICY, unknown, "ticket.closed", {})
    assert not waits(POLICY, facts(), "ticket.closed", {})
    assigned = {"agent_id": "li.na", "group_id": "printing", "reason": "skill"}
    assert notices(POLICY, unknown, "ticket.assigned", assigned, "e") == []
    assert waits(POLICY, unknown, "ticket.assigned", assigned)
    assert not waits(POLICY, unknown, "ticket.updated", {}), "no rule: nothing waits"
    # Released once the receipt is read: the agent's notice names the ticket's subject.
    [assignment] = notices(POLICY, facts(), "ticket.assigned", assigned, "e")
    assert assignment.recipient == "agent:li.na"
    assert assignment.subject.endswith(facts().subject) and facts().subject


def test_a_notice_to_whoever_has_the_ticket_waits_for_its_routing() -> None:
    """A reply read before dispatch's routing has nobody to tell yet: it waits. A notice to the
    customer does not, nor one whose event names the agent or the group itself."""
    unrouted = facts(group_id=None, agent_id=None)
    reply = {"body": "还是不行。", "channel": "email"}
    assert waits(POLICY, unrouted, "ticket.customer_replied", reply)
    assert not waits(POLICY, facts(group_id="front-line"), "ticket.customer_replied", reply)
    assert not waits(POLICY, unrouted, "ticket.triaged", {}), "the customer's: no wait"
    warned = {"metric": "first_response", "agent_id": None, "group_id": "front-line"}
    assert not waits(POLICY, unrouted, "sla.clock_warned", warned), "the event says who"


def test_a_reply_to_a_closed_ticket_does_not_tell_its_last_agent() -> None:
    """Written on a closed ticket, the reply opens a follow-up ticket (dispatch) whose assignment
    tells its own agent; "Dan Ma replied on REQ-2" to the agent who closed REQ-2 sent her to a
    ticket nobody works any longer, beside the follow-up somebody else has."""
    reply = {"body": "The copy is for the wrong month.", "channel": "email"}
    ticket = facts()
    told = notices(POLICY, ticket, "ticket.customer_replied", reply, "e")
    assert [n.recipient for n in told] == ["agent:li.na"]
    closing = TicketClosed(ticket_id=ticket.ticket_id, number=ticket.number, actor="system")
    held = {ticket.ticket_id: ticket}
    closed = evolve(held, closing)
    assert closed is not None and closed.closed
    assert notices(POLICY, closed, "ticket.customer_replied", reply, "e-2") == []
    # The closure itself still reaches the customer.
    assert [n.recipient for n in notices(POLICY, closed, "ticket.closed", {}, "e-3")] == [
        "customer"
    ]


@pytest.mark.parametrize(("days_later", "told"), [(6, ["agent:li.na"]), (8, [])])
def test_a_reply_past_the_reopen_window_does_not_tell_the_last_agent(
    days_later: int, told: list[str]
) -> None:
    """Resolved, not yet closed, and written on longer after than the reopen window (7 days in
    the shipped policy): dispatch follows the ticket up with a new one, whose assignment tells
    its agent; telling the old ticket's agent too sent her to a ticket nobody works any longer.
    Within the window the reply reopens the ticket, and she is told."""
    ticket = facts()
    held = {ticket.ticket_id: ticket}
    window = POLICY.routing.reopen_window
    resolved = TicketResolved(
        ticket_id=ticket.ticket_id, number=ticket.number, agent_id="li.na", resolution="Done"
    )
    evolve(held, resolved, at=T0, reopen_window=window)
    reply = CustomerReplied(
        ticket_id=ticket.ticket_id,
        number=ticket.number,
        channel="email",
        channel_message_id="late@example.com",
        received_at=T0 + timedelta(days=days_later),
        subject="Re: Printer jam",
        body="It jams again.",
    )
    replied = evolve(held, reply, at=reply.received_at, reopen_window=window)
    assert replied is not None
    data = reply.model_dump(mode="json")
    made = notices(POLICY, replied, "ticket.customer_replied", data, "e")
    assert [n.recipient for n in made] == told
    # An agent's reopen gives the ticket back to her: she is told of replies again.
    reopened = TicketReopened(
        ticket_id=ticket.ticket_id, number=ticket.number, actor="zhao.lei", reason="check"
    )
    evolve(held, reopened, at=reply.received_at, reopen_window=window)
    again = notices(POLICY, held[ticket.ticket_id], "ticket.customer_replied", data, "e-2")
    assert [n.recipient for n in again] == ["agent:li.na"]


def test_what_someone_else_says_on_an_agents_ticket_reaches_that_agent() -> None:
    """A supervisor answered li.na's customer, a colleague left her a note: nothing told her.
    The author is not told of their own words, nor anyone of a ticket nobody has."""
    reply = {"agent_id": "zhao.lei", "message": "We replace the printer.", "first_response": False}
    made = notices(POLICY, facts(), "ticket.responded", reply, "e")
    # The customer gets the reply itself; li.na hears what was said on her ticket.
    assert [(n.recipient, n.template) for n in made] == [
        ("customer", "agent_reply"),
        ("agent:li.na", "colleague_reply"),
    ]
    told = made[1]
    assert "zhao.lei" in told.subject and "We replace the printer." in told.body
    own = {**reply, "agent_id": "li.na"}
    mine = notices(POLICY, facts(), "ticket.responded", own, "e")
    assert [n.template for n in mine] == ["agent_reply"], "her own reply: only the customer's"
    note = {"agent_id": "wang.qiang", "note": "Same fault on the 4th floor."}
    [noted] = notices(POLICY, facts(), "ticket.note_added", note, "e")
    assert (noted.recipient, noted.template) == ("agent:li.na", "colleague_note")
    assert "Same fault on the 4th floor." in noted.body
    assert notices(POLICY, facts(), "ticket.note_added", {**note, "agent_id": "li.na"}, "e") == []
    assert notices(POLICY, facts(agent_id=None), "ticket.note_added", note, "e") == []
    assert notices(POLICY, facts(closed=True), "ticket.note_added", note, "e") == []


def test_masks_signatures_and_message_ids() -> None:
    assert mask("email", "wang.fang@example.com") == "w***@example.com"
    assert mask("sms", "+8613800001234") == "+86***34"
    assert (
        mask("webhook", "https://hooks.example.com/a/b?token=x") == "https://hooks.example.com/***"
    )
    assert sign("k", "1", b"{}") != sign("k", "2", b"{}")
    mail = mail_message_id("a", "REQ-2026-000001")
    assert (
        mail == mail_message_id("a", "REQ-2026-000001") != mail_message_id("b", "REQ-2026-000001")
    )
    assert ticket_of_mail(mail) == "REQ-2026-000001"
    assert ticket_of_mail("<a1b2.REQ-2026-000001@example.com>") is None, "only notify's own"


def test_a_retired_groups_supervisors_are_those_of_the_group_that_took_its_tickets() -> None:
    policy = parsed(without_groups(shipped(), {"printing": "customer-care"}, retire=True))
    assert policy.notifications is not None
    rule = next(r for r in policy.notifications.rules if r.to == "supervisors")
    found = recipients(policy, rule, facts(group_id="printing"), {"group_id": "printing"})
    assert [r.name for r in found] == ["赵磊"], "customer-care's supervisor, zhao.lei"


def test_an_agents_reply_goes_back_by_the_channel_the_ticket_came_from() -> None:
    reply = {"message": "Which tray?", "agent_id": "li.na"}
    [by_mail] = notices(POLICY, facts(channel="email"), "ticket.responded", reply, "e-4")
    assert (by_mail.channel, by_mail.address, by_mail.body) == (
        "email",
        "ann@example.com",
        "Which tray?",
    )
    for channel in ("chat", "web", "api", "phone"):
        chat = facts(channel=channel, channel_message_id=f"{channel}-session-9")
        [message] = notices(POLICY, chat, "ticket.responded", reply, "e-5")
        assert (message.channel, message.address) == ("messages", f"{channel}-session-9")
    # A policy may prefer SMS: a phone customer with a number gets the reply as a text message.
    document = shipped()
    for rule in document["notifications"]["rules"]:
        if rule["event"] == "ticket.responded":
            rule["channels"] = ["sms", "messages"]
    by_sms = parsed(document)
    phone = facts(channel="phone", email=None, phone="+8613800000000", channel_message_id="call-1")
    [text] = notices(by_sms, phone, "ticket.responded", reply, "e-6")
    assert (text.channel, text.address) == ("sms", "+8613800000000")


def test_customer_emails_follow_the_thread_and_join_it() -> None:
    ticket = facts(thread=["<first@mail.example.com>"])
    [ack] = notices(POLICY, ticket, "ticket.triaged", {}, "e-1")
    assert ack.thread == ("<first@mail.example.com>",)
    reply = {"message": "Which tray?", "agent_id": "li.na"}
    [answer] = notices(POLICY, ticket, "ticket.responded", reply, "e-2")
    assert answer.thread == (
        "<first@mail.example.com>",
        mail_message_id(ack.notice_key, "REQ-2026-000001"),
    )
    # Agents' notices are no part of the customer's conversation.
    [told] = notices(POLICY, ticket, "ticket.assigned", {"agent_id": "li.na"}, "e-3")
    assert told.thread == () and len(ticket.thread) == 3


def test_the_assignee_is_told_of_a_customers_reply_with_its_text() -> None:
    said = {"body": "Still broken.", "channel": "email"}
    [told] = notices(POLICY, facts(), "ticket.customer_replied", said, "e-7")
    assert (told.recipient, told.template) == ("agent:li.na", "customer_reply")
    assert "Still broken." in told.body


def test_an_emails_subject_carries_the_number_in_brackets_once() -> None:
    def subject(text: str) -> str:
        delivery = Delivery(
            1,
            "k",
            "t",
            "REQ-2026-000001",
            "e",
            "customer",
            "email",
            "a@b.c",
            "x",
            "en",
            text,
            "body",
            "v",
            1,
        )
        return subject_with_number(delivery)

    assert subject("Your request REQ-2026-000001 is resolved") == (
        "Your request [REQ-2026-000001] is resolved"
    )
    assert subject("Re: Printer jams") == "[REQ-2026-000001] Re: Printer jams"
    assert subject("Re: [REQ-2026-000001] x") == "Re: [REQ-2026-000001] x"


def test_the_exceptions_path_tells_the_customer_the_supervisors_and_the_group_asked() -> None:
    """Progress notices by policy; a specialist request reaches the group asked and copies the
    ticket group's supervisor; a breach notifies the customer only for customer_update."""

    def who(trigger: str, data: dict[str, Any]) -> list[tuple[str, str]]:
        return sorted(
            (n.recipient, n.template) for n in notices(POLICY, facts(), trigger, data, "e")
        )

    escalated = {
        "level": 1,
        "cause": "manual: x",
        "actor": "li.na",
        "to_agent": "zhao.lei",
        "to_group": "s",
    }
    assert who("ticket.escalated", escalated) == [
        ("agent:zhao.lei", "ticket_escalated"), ("customer", "progress_escalated")
    ]  # fmt: skip
    assert who("ticket.reassigned", {"to_group": "x"}) == [("customer", "progress_reassigned")]
    asked = {"to_group": "network", "question": "VPN?", "actor": "li.na", "agent_id": "li.na"}
    assert who("ticket.specialist_requested", asked) == [
        ("agent:wu.hao", "specialist_request"), ("agent:zhao.lei", "specialist_request")
    ]  # fmt: skip
    found = {"from_group": "network", "findings": "up", "actor": "wu.hao"}
    assert who("ticket.findings_provided", found) == [
        ("agent:li.na", "findings"), ("agent:zhao.lei", "findings")
    ]  # fmt: skip
    assert who("sla.clock_breached", {"metric": "customer_update"}) == [
        ("customer", "progress_update")
    ]
    assert who("sla.clock_breached", {"metric": "first_response"}) == []
    flagged = {"actor": "li.na", "reason": "abusive"}
    assert who("ticket.customer_flagged", flagged) == [("agent:zhao.lei", "customer_flagged")]


def test_only_events_a_rule_answers_fire() -> None:
    assert fires(POLICY, "ticket.triaged", {})
    assert not fires(POLICY, "ticket.received", {})
    closed = {"actor": "system", "reason": "resolved 7d ago and not reopened"}
    [closure] = notices(POLICY, facts(), "ticket.closed", closed, "e")
    assert (closure.recipient, closure.template) == ("customer", "closure")
    silent = {**closed, "silent": True}
    assert not fires(POLICY, "ticket.closed", silent), "a backlog: nobody is told"
    assert notices(POLICY, facts(), "ticket.closed", silent, "e") == []
    reason = "waited 7d for the customer's reply"
    unanswered = {"agent_id": "system", "resolution": "No reply in 7d: resolved.", "reason": reason}
    resolution, told = notices(POLICY, facts(), "ticket.resolved", unanswered, "e")
    assert (resolution.recipient, resolution.template) == ("customer", "resolution")
    assert "No reply in 7d: resolved." in resolution.body
    # Its agent hears why the ticket left their list; a person's resolution tells only the
    # customer (the agent did it).
    assert (told.recipient, told.template) == ("agent:li.na", "resolved_unanswered")
    assert "REQ-2026-000001" in told.body and "系统已按标准答复解决" in told.body, "li.na: zh"
    by_hand = {"agent_id": "li.na", "resolution": "Fixed."}
    made = notices(POLICY, facts(), "ticket.resolved", by_hand, "e")
    assert [n.recipient for n in made] == ["customer"]
    late = {**unanswered, "silent": True}
    assert notices(POLICY, facts(), "ticket.resolved", late, "e") == [], "a backlog"
    reminded = {"waited": "3d", "resolves_in": "4d"}
    [reminder] = notices(POLICY, facts(language="en"), "ticket.customer_reminded", reminded, "e")
    assert (reminder.recipient, reminder.template) == ("customer", "reminder")
    assert "3d ago" in reminder.body and "within 4d" in reminder.body
    [waits] = notices(
        POLICY, facts(language="en"), "ticket.customer_reminded", {"waited": "3d"}, "e"
    )
    assert "3d ago" in waits.body and "resolved" not in waits.body, "a complaint waits for a person"
    assert (
        notices(POLICY, facts(), "ticket.customer_reminded", {**reminded, "silent": True}, "e")
        == []
    )
    assert not fires(parsed({**shipped(), "notifications": None}), "ticket.triaged", {})


def test_a_complaint_left_unanswered_tells_its_agent_and_supervisors_not_its_customer() -> None:
    """The system does not resolve a complaint whose question went unanswered: its people hear
    that it waits on them (a backlog's, silent, tells nobody)."""
    left = {"waited": "7d"}
    told = notices(POLICY, facts(group_id="customer-care"), "ticket.left_unanswered", left, "e")
    assert {(n.recipient, n.template) for n in told} == {
        ("agent:li.na", "left_unanswered"),
        ("agent:zhao.lei", "left_unanswered"),
    }
    assert all("7d" in n.body and "REQ-2026-000001" in n.body for n in told)
    silent = {**left, "silent": True}
    assert notices(POLICY, facts(), "ticket.left_unanswered", silent, "e") == []


def test_a_new_policys_calendar_is_used_for_the_expected_time_not_the_last_ones() -> None:
    """Calendars are made once per definition in force: a policy that changes the hours gives
    the acknowledgement of its own hours."""
    [before] = notices(POLICY, facts(), "ticket.triaged", {}, "e-1")
    document = shipped()
    document["sla"]["calendars"]["office"]["hours"]["fri"] = ["09:00-17:00"]
    [after] = notices(parsed(document), facts(), "ticket.triaged", {}, "e-1")
    [again] = notices(POLICY, facts(), "ticket.triaged", {}, "e-1")
    # T0 is Friday 16:00 in Shanghai; 2 business hours: 18:00 by the shipped hours, Monday 10:00
    # if Friday closes at 17:00.
    assert "2026-11-20 18:00" in before.body and "2026-11-20 18:00" in again.body
    assert "2026-11-23 10:00" in after.body


def test_templates_render_in_the_sandbox_with_jinjas_globals() -> None:
    """What operators' templates may use: Jinja's globals; unknown names render empty; what
    reaches into Python is refused — the notice fails as a template error, the others go."""
    document = shipped()
    zh = document["notifications"]["templates"]["acknowledgement"]["zh"]
    zh["body"] = "{% for n in range(3) %}{{ n }}{% endfor %}[{{ nobody }}]{{ number }}"
    [ack] = notices(parsed(document), facts(language="zh"), "ticket.triaged", {}, "e-1")
    assert (ack.body, ack.failure) == ("012[]REQ-2026-000001", None)
    zh["body"] = "{{ number.__class__.__mro__ }}"
    [refused] = notices(parsed(document), facts(language="zh"), "ticket.triaged", {}, "e-1")
    assert refused.failure == "template_error" and "unsafe" in refused.error, refused


def _desk_of_the_shipped_policy(loads: dict[str, int]) -> tuple[Desk, Recorded, Ticket]:
    """dispatch's desk under the shipped policy with a ticket li.na resolved."""
    recorded = Recorded()
    desk = Desk(POLICY, "v", T0, board_from(POLICY, {}, loads, {}), recorded)
    desk.classify(triaged(1, complexity="simple", category="inquiry", language="zh"))
    ticket = desk.by_number("REQ-2026-000001")
    assert ticket is not None and ticket.agent_id == "li.na"
    for kind in ("accept", "resolve"):
        body = {"reopen": {"reason": "x"}, "resolve": {"resolution": "Replaced the drum"}}
        shaped = COMMAND.validate_python({
            "command_id": kind, "type": kind, "ticket_number": ticket.number,
            "actor": "li.na", **body.get(kind, {}),
        })  # fmt: skip
        assert desk.command(shaped) is None, kind
    return desk, recorded, ticket


def _heard(events: list[Any], ticket: NoticeFacts) -> list[tuple[str, str, str]]:
    """Who is told what of dispatch's and intake's events, as notify evolves its facts: (trigger,
    recipient, template) of every agent's notice."""
    known = {ticket.ticket_id: ticket}
    told: list[tuple[str, str, str]] = []
    for n, event in enumerate(events):
        evolve(known, event)
        trigger = event.event_type().removeprefix("servicedesk.").rsplit(".v", 1)[0]
        data = event.model_dump(mode="json")
        for notice in notices(POLICY, known[ticket.ticket_id], trigger, data, f"e-{n}"):
            if notice.recipient != "customer":
                told.append((trigger, notice.recipient, notice.template))
    return told


def _after_resolution(recorded: Recorded) -> list[Any]:
    found = recorded.events()
    last = max(i for i, e in enumerate(found) if isinstance(e, TicketResolved))
    return found[last + 1 :]


def test_a_reopen_by_the_survey_link_or_a_supervisor_tells_the_agent_who_and_why() -> None:
    """sop.md: the customer rejects the solution. With room, the ticket goes straight back to
    its agent (dispatch records only ticket.reopened): the agent hears who reopened it and why,
    in their language."""
    desk, recorded, ticket = _desk_of_the_shipped_policy({})
    ticket_facts = facts(ticket_id=ticket.ticket_id, agent_id=None)
    reopen = {"command_id": "r", "type": "reopen", "ticket_number": ticket.number}
    customer = COMMAND.validate_python({**reopen, "actor": "customer", "reason": "Still jams"})
    assert desk.command(customer) is None
    assert (ticket.status, ticket.agent_id) == ("in_progress", "li.na")
    events = [*recorded.events(TicketAssigned), *_after_resolution(recorded)]
    assert [type(e) for e in events] == [TicketAssigned, TicketReopened]
    assert _heard(events, ticket_facts) == [
        ("ticket.assigned", "agent:li.na", "assignment"),
        ("ticket.reopened", "agent:li.na", "reopened"),
    ]
    [told] = notices(POLICY, ticket_facts, "ticket.reopened", events[1].model_dump(), "e")
    assert told.language == "zh" and told.channel == "email"
    assert (
        told.body == "李娜，已解决的工单 REQ-2026-000001（Printer jam）被客户重新打开：Still jams"
    )
    by_supervisor = {"actor": "zhao.lei", "reason": "wrong fix"}
    [told] = notices(POLICY, facts(agent_id="emma.jones"), "ticket.reopened", by_supervisor, "e")
    assert (told.recipient, told.language) == ("agent:emma.jones", "en")
    assert "was reopened by zhao.lei: wrong fix" in told.body


def test_a_reopen_by_the_customers_reply_tells_the_agent_once_with_the_reply() -> None:
    """dispatch reopens on a mail reply with ticket.reopened (``by_reply``), and notify also
    hears intake's ticket.customer_replied:
    the agent gets the reply (customer_reply), not a second notice of the reopen."""
    desk, recorded, ticket = _desk_of_the_shipped_policy({})
    reply = CustomerReplied(
        ticket_id=ticket.ticket_id,
        number=ticket.number,
        channel="email",
        channel_message_id="reply-1@example.com",
        received_at=T0,
        subject="Re: Printer jam",
        body="It still jams.",
    )
    desk.customer_replied(reply, "reply-event")
    [reopened] = _after_resolution(recorded)
    assert isinstance(reopened, TicketReopened) and reopened.actor == "customer"
    assert _heard([reply, reopened], facts(ticket_id=ticket.ticket_id)) == [
        ("ticket.customer_replied", "agent:li.na", "customer_reply")
    ]
    # Sealed, its reason cannot tell: the event is opened (fires), the opened one decides.
    sealed = {"actor": "customer", "reason": {"ref": "cust-1", "ct": "…"}}
    assert fires(POLICY, "ticket.reopened", sealed)


def test_a_reopen_its_agent_has_no_room_for_tells_them_and_the_next_agent_once_each() -> None:
    """No room: the ticket goes back to the group; its agent hears of the reopen, whoever has it
    now hears of it by the assignment notice, nobody twice."""
    desk, recorded, ticket = _desk_of_the_shipped_policy({})
    desk.board.agents["li.na"].load = 8  # full by the time the customer reopens
    reopen = {"command_id": "r", "type": "reopen", "ticket_number": ticket.number}
    customer = COMMAND.validate_python({**reopen, "actor": "customer", "reason": "Still jams"})
    assert desk.command(customer) is None
    events = _after_resolution(recorded)
    assert [type(e) for e in events] == [TicketReopened, TicketReassigned, TicketAssigned]
    heard = _heard(events, facts(ticket_id=ticket.ticket_id))
    assert heard == [
        ("ticket.reopened", "agent:li.na", "reopened"),
        ("ticket.assigned", f"agent:{ticket.agent_id}", "assignment"),
    ]
    assert ticket.agent_id != "li.na"


def test_a_reopen_nobody_has_room_for_waits_in_the_queue_and_its_supervisors_hear_of_it() -> None:
    """No agent of the group has room: the reopened ticket waits in the queue. Its old agent
    hears of the reopen; the group's supervisors hear that it waits, since nobody else would
    until its clocks warn. A ticket queued as it first arrives tells nobody."""
    desk, recorded, ticket = _desk_of_the_shipped_policy({})
    for agent in desk.board.agents.values():
        agent.load = 99
    reopen = {"command_id": "r", "type": "reopen", "ticket_number": ticket.number}
    customer = COMMAND.validate_python({**reopen, "actor": "customer", "reason": "Still jams"})
    assert desk.command(customer) is None
    events = _after_resolution(recorded)
    assert [type(e) for e in events] == [TicketReopened, TicketReassigned, TicketQueued]
    assert (ticket.status, ticket.agent_id) == ("queued", None)
    assert _heard(events, facts(ticket_id=ticket.ticket_id)) == [
        ("ticket.reopened", "agent:li.na", "reopened"),
        ("ticket.queued", "agent:zhao.lei", "reopened_queued"),
    ]
    queued = events[-1].model_dump(mode="json")
    [told] = notices(POLICY, facts(ticket_id=ticket.ticket_id), "ticket.queued", queued, "e")
    assert told.subject == "重新打开的工单 REQ-2026-000001 在队列中等待", told.subject
    assert f"{queued['group_id']} 组当前没有在班且有空的客服" in told.body, told.body

    first_seen = Recorded()
    arrived = Desk(POLICY, "v", T0, board_from(POLICY, {}, {}, {}), first_seen)
    for agent in arrived.board.agents.values():
        agent.load = 99
    arrived.classify(triaged(2, complexity="simple", category="inquiry"))
    [first] = first_seen.events(TicketQueued)
    assert first.cause == "classified"
    assert not fires(POLICY, "ticket.queued", first.model_dump(mode="json"))


def test_a_dissatisfied_customers_score_and_comment_reach_the_groups_supervisors() -> None:
    """sop.md: satisfaction of at least 90 %. A score below sla.satisfaction.satisfied_from
    (shipped 4) tells the ticket group's supervisors, with the comment; a satisfied one only
    counts."""
    rated = {"score": 1, "comment": "Nobody called back.", "actor": "customer"}
    trigger = "ticket.satisfaction_recorded"
    [told] = notices(POLICY, facts(), trigger, rated, "e")
    assert (told.recipient, told.template, told.language) == (
        "agent:zhao.lei",
        "dissatisfied",
        "zh",
    )
    assert "1/5" in told.subject and told.body.endswith("评语：Nobody called back.")
    [unstopped] = notices(POLICY, facts(), trigger, {**rated, "comment": "没人回电话"}, "e")
    assert unstopped.body.endswith("评语：没人回电话。"), "one full stop, never two"
    [silent] = notices(POLICY, facts(), trigger, {**rated, "score": 3, "comment": ""}, "e")
    assert "3/5" in silent.subject and "未留评语" in silent.body
    for score in (4, 5):
        assert not fires(POLICY, trigger, {**rated, "score": score})
    # The threshold is the policy's: satisfied from 3, a 3 tells nobody.
    document = shipped()
    document["sla"]["satisfaction"]["satisfied_from"] = 3
    assert notices(parsed(document), facts(), trigger, {**rated, "score": 3}, "e") == []
    assert fires(parsed(document), trigger, {**rated, "score": 2})


def test_a_queued_tickets_clock_warning_reaches_its_groups_supervisors() -> None:
    """A ticket waiting in the queue has no assignee: its warning told nobody, and its group's
    supervisors first heard of it at the breach. Now they are warned; an assigned ticket's
    warning still goes to its agent alone."""
    warned = {
        "metric": "first_response",
        "fraction": 0.8,
        "deadline": "2026-11-20T10:00:00Z",
        "group_id": "front-line",
        "agent_id": None,
    }
    queued = notices(POLICY, facts(agent_id=None), "sla.clock_warned", warned, "e")
    assert [(n.recipient, n.template) for n in queued] == [("agent:zhao.lei", "sla_warning_queued")]
    assert "front-line" in queued[0].body and "REQ-2026-000001" in queued[0].subject
    assert "2026-11-20 18:00 (Asia/Shanghai)" in queued[0].body, "the desk's time, not UTC's"
    # The metric as people read it in the notice's language, not its id.
    assert "首次响应" in queued[0].subject and "first_response" not in queued[0].subject
    [english] = notices(
        POLICY, facts(), "sla.clock_warned", {**warned, "agent_id": "emma.jones"}, "e"
    )
    assert "of first response used" in english.subject, english.subject
    held = notices(POLICY, facts(), "sla.clock_warned", {**warned, "agent_id": "li.na"}, "e")
    assert [(n.recipient, n.template) for n in held] == [("agent:li.na", "sla_warning")]
    # Two rules giving one recipient the same notice (one key): made once.
    document = shipped()
    [rule] = [r for r in document["notifications"]["rules"] if r.get("assigned") is False]
    document["notifications"]["rules"].append({**rule, "assigned": None})
    twice = notices(parsed(document), facts(agent_id=None), "sla.clock_warned", warned, "e")
    assert [n.notice_key for n in twice] == ["e:agent:zhao.lei:sla_warning_queued"]
    # Two rules, two texts, one person: the first rule's notice only (a clock event from
    # before sla said whose clock it is: a specialist request's read as the ticket's).
    late = {**warned, "metric": "specialist_findings"}
    once = notices(POLICY, facts(agent_id=None), "sla.clock_warned", late, "e")
    assert [(n.recipient, n.template) for n in once] == [("agent:zhao.lei", "sla_warning_queued")]


def test_a_late_specialist_request_is_the_group_askeds_not_the_tickets_owners() -> None:
    """The network group, asked by li.na, is late with its findings: its agents and its
    supervisor are warned and told of the escalation, in the plain warning's words (not "waits
    in the queue"); li.na, who waits on them, is not paged as if she were late."""
    late = {
        "metric": "specialist_findings",
        "fraction": 0.75,
        "deadline": "2026-11-20T10:00:00Z",
        "group_id": "network",
        "agent_id": None,
        "specialists": True,
    }
    owned = facts(agent_id="li.na", group_id="front-line")
    warned = notices(POLICY, owned, "sla.clock_warned", late, "e")
    assert [(n.recipient, n.template) for n in warned] == [
        ("agent:wu.hao", "sla_warning"),
        ("agent:qian.hui", "sla_warning"),
    ]
    assert "专业组答复" in warned[0].subject, "the metric's name, in wu.hao's language"
    raised = {"level": 1, **{k: late[k] for k in ("metric", "group_id", "agent_id", "specialists")}}
    escalated = notices(POLICY, owned, "sla.escalated", raised, "e")
    assert sorted(n.recipient for n in escalated) == ["agent:qian.hui", "agent:wu.hao"]
    # The same clock of the ticket's own (first response) still pages its agent.
    mine = {**late, "metric": "first_response", "agent_id": "li.na", "specialists": False}
    assert [n.recipient for n in notices(POLICY, owned, "sla.clock_warned", mine, "e")] == [
        "agent:li.na"
    ]


def test_an_sla_escalation_tells_its_assignee_once_a_persons_tells_the_supervisor() -> None:
    """An SLA breach escalated the ticket: its agent got the escalation notice (sla.escalated)
    and the same again as ticket_escalated (dispatch's ticket.escalated), "升级 1 级" twice."""
    raised = {"level": 1, "metric": "first_response", "agent_id": "li.na", "group_id": "front-line"}
    by_sla = {
        "level": 1,
        "cause": "sla:first_response",
        "actor": "system",
        "from_group": "front-line",
    }
    told = [
        (n.recipient, n.template)
        for trigger, data in (("sla.escalated", raised), ("ticket.escalated", by_sla))
        for n in notices(POLICY, facts(), trigger, data, trigger)
    ]
    assert [t for t in told if t[0] == "agent:li.na"] == [("agent:li.na", "escalation")]
    by_hand = {**by_sla, "cause": "too hard for me", "actor": "li.na", "to_agent": "zhao.lei"}
    [supervisor] = [n for n in notices(POLICY, facts(), "ticket.escalated", by_hand, "e")
                    if n.recipient != "customer"]  # fmt: skip
    assert (supervisor.recipient, supervisor.template) == ("agent:zhao.lei", "ticket_escalated")

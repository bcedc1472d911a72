"""A rule's ``at_most``: one customer's acknowledgements are limited, through intake and notify
on the real broker and PostgreSQL; every request is still a ticket, another customer is not held
back, and what was not sent is on record (sealed, as every notice)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from services.intake.app import build as intake
from services.intake.events import CustomerReplied
from services.notify.app import build as notify
from services.notify.limits import LimitWarnings
from services.notify.rules import Notice
from services.policy.notify import NoticeLimit
from shared.database import connect
from shared.local.sinks import http_receiver, smtp_server
from shared.settings import Settings
from tests.intake.requests import encode, intake_clock, valid
from tests.notify.support import agent_notices, received, ticket_id, triaged
from tests.notify.test_notify import EVENTS, kind, notify_settings
from tests.sla.support import T0
from tests.support.events import assignment, publish_event
from tests.support.kafka import KafkaProbe
from tests.support.records import data, ticket_event
from tests.support.services import running

VICTIM, OTHER = "wang.fang@example.com", "li.lei@example.com"


@pytest.mark.asyncio
async def test_one_customers_acknowledgements_stop_at_the_limit_and_the_rest_are_recorded(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """Five requests in one customer's name (a flood forging their address) under a limit of
    two an hour: five tickets, two acknowledgements, three recorded as ``limited``; the same
    address in capitals is the same customer. Another customer's request is acknowledged."""
    with smtp_server() as smtp, http_receiver() as http:
        desk = notify_settings(await intake_clock(settings), tmp_path, smtp, http)
        assert desk.policy_file is not None
        policy = yaml.safe_load(desk.policy_file.read_text())
        [rule] = [r for r in policy["notifications"]["rules"] if r["template"] == "acknowledgement"]
        rule["at_most"] = {"count": 2, "per": "1h"}
        desk.policy_file.write_text(yaml.safe_dump(policy, allow_unicode=True))
        async with running(intake(desk)), running(notify(desk)):
            for n in range(5):
                email = VICTIM.upper() if n == 4 else VICTIM
                customer = {"name": "王芳", "email": email, "language": "zh-CN"}
                await kafka.publish("requests.incoming", encode(valid(f"f-{n}", customer=customer)))
            await kafka.await_records(EVENTS, kind("failed"), count=3)
            await kafka.await_records(EVENTS, kind("sent"), count=2)
            other = {"name": "李雷", "email": OTHER, "language": "en"}
            await kafka.publish("requests.incoming", encode(valid("o-1", customer=other)))
            await kafka.await_records(EVENTS, kind("sent"), count=3)
            tickets = await kafka.await_records("intake.events", ticket_event("received"), count=6)
            events = await kafka.all_records(EVENTS, settle=1.0)
            conn = await connect(desk.require_database_url())
            try:
                rows = await conn.fetch(
                    "SELECT status, last_error, subject, body FROM notify.deliveries "
                    "WHERE template = 'acknowledgement' ORDER BY id"
                )
            finally:
                await conn.close()
    assert len(tickets) == 6, "every request is a ticket"
    assert len(smtp.to(VICTIM)) == 2 and len(smtp.to(OTHER)) == 1
    assert [r["status"] for r in rows].count("failed") == 3
    assert [r["status"] for r in rows].count("sent") == 3
    limited = [r for r in rows if r["status"] == "failed"]
    assert all("2 acknowledgement notices to this customer within 1h" in r["last_error"]
               for r in limited), limited  # fmt: skip
    assert all("王芳" not in r["subject"] + r["body"] for r in limited), "kept sealed"
    failed = [e for e in events if kind("failed")(e)]
    assert {data(e)["reason"] for e in failed} == {"limited"}


@pytest.mark.asyncio
async def test_a_flood_of_replies_to_one_ticket_tells_its_agent_only_so_often(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """Each customer reply told the agent: a customer (or a forger) mailing reply after reply
    paged them once a reply. Under a limit of two an hour a ticket, five replies tell li.na
    twice, the other three are recorded ``limited``; a reply to another ticket of hers is
    counted apart."""
    with smtp_server() as smtp, http_receiver() as http:
        desk = notify_settings(settings, tmp_path, smtp, http)
        assert desk.policy_file is not None
        policy = yaml.safe_load(desk.policy_file.read_text())
        [rule] = [r for r in policy["notifications"]["rules"] if r["template"] == "customer_reply"]
        rule["at_most"] = {"count": 2, "per": "1h"}
        desk.policy_file.write_text(yaml.safe_dump(policy, allow_unicode=True))
        async with running(notify(desk)):
            for n in (1, 2):
                stream = f"ticket-{ticket_id(n)}"
                for version, event in enumerate((received(n), triaged(n)), start=1):
                    await publish_event(
                        kafka, "intake.events", event, stream_id=stream, version=version
                    )
                assigned = assignment(ticket_id(n), received(n).number, "li.na")
                await publish_event(kafka, "dispatch.events", assigned, stream_id=stream)
            # Replies come once the ticket is hers (on another topic than dispatch's: a reply
            # read before the assignment has no assignee to tell).
            await kafka.await_records(EVENTS, kind("sent"), count=4)  # acks, assignments
            for n in (1, 2):
                stream = f"ticket-{ticket_id(n)}"
                for r in range(5 if n == 1 else 1):
                    reply = CustomerReplied(
                        ticket_id=ticket_id(n), number=received(n).number, channel="email",
                        channel_message_id=f"r-{n}-{r}@example.com", received_at=T0,
                        subject="Re: 问题", body=f"第 {r} 次回复",
                    )  # fmt: skip
                    await publish_event(
                        kafka, "intake.events", reply, stream_id=stream, version=3 + r
                    )
            await kafka.await_records(EVENTS, kind("failed"), count=3)
            events = await kafka.all_records(EVENTS, settle=1.5)
        told = agent_notices(http, "li.na", "customer_reply")
    by_ticket = Counter(t["number"] for t in told)
    assert by_ticket == {received(1).number: 2, received(2).number: 1}
    failed = [data(e) for e in events if kind("failed")(e)]
    assert [(f["reason"], f["number"]) for f in failed] == [("limited", received(1).number)] * 3


def test_a_flood_of_limited_notices_warns_once_a_window_per_customer() -> None:
    """Each limited notice logged a warning: a flood of 10,000 forged requests, 10,000 lines.
    The first of a customer's window warns; the rest of that window do not."""
    hour = NoticeLimit(count=2, per=timedelta(hours=1))
    warnings = LimitWarnings(size=3)

    def limited(ref: str, template: str = "acknowledgement") -> Notice:
        return Notice(
            notice_key=f"e:{ref}", ticket_id="t", number="N", cause_event_id="e",
            recipient="customer", channel="email", address="a", template=template,
            language="en", subject="s", body="b", failure="limited", at_most=hour,
            customer_ref=ref,
        )  # fmt: skip

    assert warnings.first(limited("c1"), T0)
    assert not warnings.first(limited("c1"), T0 + timedelta(minutes=59))
    assert warnings.first(limited("c2"), T0 + timedelta(minutes=59)), "another customer"
    assert warnings.first(limited("c1", "resolution"), T0), "another rule"
    assert warnings.first(limited("c1"), T0 + timedelta(hours=1)), "the next window"
    assert not warnings.first(limited("c1"), T0 + timedelta(hours=1, minutes=1))
    assert warnings.first(limited("c1"), T0), "a clock set back warns again"
    for n in range(10):  # bounded: never more than its size remembered
        warnings.first(limited(f"x{n}"), T0)
    assert len(warnings._warned) <= 3

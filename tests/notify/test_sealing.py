"""Notices kept sealed under their customer until sent; an erased customer's are never sent."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.intake.app import build as intake
from services.notify.app import build as notify
from services.notify.rules import Notice, NoticeFacts, notices
from services.notify.sealing import as_if_erased, kept, opened, withheld
from services.notify.storage import Delivery
from services.policy import DEFAULT_POLICY, Policy
from shared.database import connect
from shared.keystore import KeyStore, MasterKey
from shared.local.sinks import http_receiver, smtp_server
from shared.personal import ERASED, DataKeys, keys_for
from shared.policyfile import load_policy
from shared.settings import Settings
from tests.intake.requests import encode, intake_clock, valid
from tests.notify.support import agent_notices
from tests.notify.test_notify import EVENTS, data, kind, notify_settings
from tests.support.events import assignment, publish_event
from tests.support.kafka import KafkaProbe
from tests.support.services import running
from tests.support.waiting import eventually

POLICY, _ = load_policy(Path(DEFAULT_POLICY), Policy)
CUSTOMER = "wang.fang@example.com"
WRITTEN = "The printer on floor 3 jams."  # what the customer wrote, as valid() sends it


def notice(recipient: str, address: str) -> Notice:
    return Notice(
        notice_key=f"k-{recipient}",
        ticket_id="t-1",
        number="REQ-2026-000001",
        cause_event_id="e-1",
        recipient=recipient,
        channel="email",
        address=address,
        template="acknowledgement",
        language="en",
        subject="Your request: printer jams",
        body=f"Dear Wang Fang, you wrote: {WRITTEN}",
    )


def delivery(kept_notice: Notice) -> Delivery:
    n = kept_notice
    erased_subject, erased_body = n.if_erased or (None, None)
    return Delivery(
        1, n.notice_key, n.ticket_id, n.number, n.cause_event_id, n.recipient, "email",
        n.address or "", n.template, n.language, n.subject, n.body, "v1", 1,
        erased_subject=erased_subject, erased_body=erased_body,
    )  # fmt: skip


@pytest.mark.unit
def test_kept_sealed_for_the_customer_opened_to_send_and_withheld_once_erased() -> None:
    key = secrets.token_bytes(32)
    keys = DataKeys({"cust-1": key})
    facts = {"t-1": NoticeFacts(ticket_id="t-1", number="REQ-2026-000001")}
    facts["t-1"].customer_name = keys.seal_text("cust-1", "Wang Fang")
    clear = [notice("customer", CUSTOMER), notice("agent:li.na", "http://hooks/li.na")]

    stored = kept(clear, facts, keys)

    for n in stored:
        assert "Wang Fang" not in n.body + n.subject and WRITTEN not in n.body
    assert CUSTOMER not in str(stored[0].address), "the customer's address is theirs"
    assert stored[1].address == "http://hooks/li.na", "an agent's hook is not"
    sendable, erased = opened([delivery(n) for n in stored], keys)
    assert [(d.address, d.subject, d.body) for d in sendable] == [
        (n.address, n.subject, n.body) for n in clear
    ]
    assert erased == []
    sendable, erased = opened([delivery(n) for n in stored], DataKeys({"cust-1": None}))
    assert sendable == []
    assert {(d.address, d.body) for d in erased} == {(ERASED, ERASED)}


@pytest.mark.unit
def test_a_notice_that_cannot_be_sent_is_kept_sealed_all_the_same() -> None:
    """A customer with no contact for the rule's channels (a phone caller, an acknowledgement
    by email) gets no notice, but the row recording it holds what it would have said: it was
    kept in clear, the customer's name and words in deliveries for good."""
    keys = DataKeys({"cust-1": secrets.token_bytes(32)})
    facts = {"t-1": NoticeFacts(ticket_id="t-1", number="REQ-2026-000001")}
    facts["t-1"].customer_name = keys.seal_text("cust-1", "Wang Fang")
    failed = replace(notice("customer", CUSTOMER), failure="no_contact", channel=None)

    [stored] = kept([failed], facts, keys)

    assert "Wang Fang" not in stored.body + stored.subject and WRITTEN not in stored.body
    assert CUSTOMER not in str(stored.address)
    [shown], _ = opened([delivery(stored)], keys)
    assert (shown.subject, shown.body) == (failed.subject, failed.body)


@pytest.mark.unit
def test_notices_to_a_customer_already_erased_are_withheld_and_the_desks_go_out() -> None:
    keys = DataKeys({"cust-1": secrets.token_bytes(32)})
    facts = {"t-1": NoticeFacts(ticket_id="t-1", number="REQ-2026-000001")}
    facts["t-1"].customer_name = keys.seal_text("cust-1", "Wang Fang")
    made = [notice("customer", CUSTOMER), notice("agent:li.na", "http://hooks/li.na")]

    assert withheld(made, facts, keys) == made
    customers, agents = withheld(made, facts, DataKeys({"cust-1": None}))

    assert (customers.failure, customers.address, customers.body) == ("erased", ERASED, ERASED)
    assert agents == made[1]
    legacy = {"t-1": NoticeFacts(ticket_id="t-1", number="REQ-2026-000001", customer_name="x")}
    assert withheld(made, legacy, DataKeys({})) == made, "no sealed customer: nothing erased"


@pytest.mark.unit
def test_a_desk_notice_goes_out_as_the_erasure_left_it_if_the_erasure_came_first() -> None:
    """An assignment waiting for the agent's webhook (down, retried) when the customer is
    erased: the agent is still told, with "erased" where the customer's subject was — not
    failed as the customer's own notices are."""
    keys = DataKeys({"cust-1": secrets.token_bytes(32)})
    ticket = sealed_ticket(keys)
    assigned = {"agent_id": "li.na", "group_id": "front-line", "reason": "skills"}
    asked: list[str] = []

    def erased() -> dict[str, Any] | None:
        asked.append("erased")
        return as_if_erased(ticket, assigned, keys)

    [made] = notices(POLICY, keys.reveal(ticket), "ticket.assigned", assigned, "e-1", erased=erased)
    [stored] = kept([made], {"t-1": ticket}, keys)

    assert made.subject == "新工单 REQ-2026-000001：Printer jams"
    assert made.if_erased == ("新工单 REQ-2026-000001：erased", made.body)
    assert "Printer jams" not in stored.subject and stored.if_erased == made.if_erased
    [sent], erased_ones = opened([delivery(stored)], DataKeys({"cust-1": None}))
    assert erased_ones == []
    assert (sent.address, sent.subject, sent.body) == (made.address, *made.if_erased)
    [sent], _ = opened([delivery(stored)], keys)
    assert (sent.subject, sent.body) == (made.subject, made.body), "not erased: as made"
    acknowledged = notices(POLICY, keys.reveal(ticket), "ticket.triaged", {}, "e-2", erased=erased)
    assert [n.if_erased for n in acknowledged] == [None], "the customer's own: failed if erased"
    assert asked == ["erased"], "rendered again only for the desk's people"
    note = {
        "agent_id": "wang.qiang",
        "note": keys.seal_text("cust-1", "Ms Wang: +86 1380").as_json(),
    }
    [noted] = notices(
        POLICY, keys.reveal(ticket), "ticket.note_added", keys.reveal_json(note), "e-3",
        erased=lambda: as_if_erased(ticket, note, keys),
    )  # fmt: skip
    assert "Ms Wang: +86 1380" in noted.body
    assert noted.if_erased is not None and "Ms Wang" not in "".join(noted.if_erased)
    assert noted.if_erased[1] == noted.body.replace("Ms Wang: +86 1380", "erased")


@pytest.mark.unit
def test_a_desk_notice_about_a_ticket_never_sealed_or_already_erased_is_rendered_once() -> None:
    keys = DataKeys({"cust-1": secrets.token_bytes(32)})
    legacy = sealed_ticket(keys).model_copy(update={"customer_name": "Ann", "subject": "Jam"})
    assert as_if_erased(legacy, {}, keys) is None
    assert as_if_erased(sealed_ticket(keys), {}, DataKeys({"cust-1": None})) is None


def sealed_ticket(keys: DataKeys) -> NoticeFacts:
    return NoticeFacts(
        ticket_id="t-1",
        number="REQ-2026-000001",
        subject=keys.seal_text("cust-1", "Printer jams"),
        customer_name=keys.seal_text("cust-1", "Wang Fang"),
        email=keys.seal_text("cust-1", CUSTOMER),
        language="en",
        group_id="front-line",
        agent_id="li.na",
    )


@pytest.mark.unit
def test_a_ticket_without_a_sealed_customer_keeps_its_notices_as_they_are() -> None:
    facts = {"t-1": NoticeFacts(ticket_id="t-1", number="REQ-2026-000001", customer_name="x")}
    clear = [notice("customer", CUSTOMER)]
    assert kept(clear, facts, DataKeys({})) == clear
    failed = [replace(clear[0], failure="no_contact")]
    assert kept(failed, facts, DataKeys({})) == failed


@pytest.mark.asyncio
async def test_a_notice_waiting_to_be_retried_is_never_sent_once_its_customer_is_erased(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    with smtp_server(refuse=10**6) as smtp, http_receiver() as http:
        desk = notify_settings(
            await intake_clock(settings), tmp_path, smtp, http, notify_max_attempts=10**6
        )
        async with running(intake(desk)), running(notify(desk)):
            await kafka.publish("requests.incoming", encode(valid("erase-1")))
            conn = await connect(desk.require_database_url(), schema="notify")
            try:

                async def tried() -> list[dict[str, Any]]:
                    rows = await conn.fetch(
                        "SELECT address, subject, body, attempts FROM deliveries "
                        "WHERE template = 'acknowledgement'"
                    )
                    return [dict(r) for r in rows]

                [row] = await eventually(
                    tried, lambda rows: bool(rows) and rows[0]["attempts"] >= 1, what="tried"
                )
                assert CUSTOMER not in str(row["address"]) + str(row["body"]), row
                store = KeyStore(MasterKey.from_settings(desk))
                ref = await store.find(conn, f"email:{CUSTOMER}")
                assert ref is not None
                assert await store.erase(conn, ref, datetime.now(UTC))
                [failed] = await kafka.await_records(EVENTS, kind("failed"), timeout=60)
            finally:
                await conn.close()
            smtp.refuse = 0  # the mail server is back: still nothing goes out
            await kafka.all_records(EVENTS, settle=1.5)
    assert (data(failed)["template"], data(failed)["reason"]) == ("acknowledgement", "erased")
    assert smtp.to(CUSTOMER) == []


async def assigned_to_li_na(
    kafka: KafkaProbe, message_id: str, *, after_receipt_read: bool = False
) -> str:
    """A request through intake, its ticket (its number returned) then assigned to li.na as dispatch
    would — once notify has read the receipt (its acknowledgement sent), if so asked."""
    await kafka.publish("requests.incoming", encode(valid(message_id)))
    [receipt] = await kafka.await_records(
        "intake.events", lambda r: r.header("ce_type") == "servicedesk.ticket.received.v1"
    )
    ticket, number = data(receipt)["ticket_id"], data(receipt)["number"]
    if after_receipt_read:
        await kafka.await_records(EVENTS, kind("sent"))
    assigned = assignment(ticket, number, "li.na")
    await publish_event(kafka, "dispatch.events", assigned, stream_id=f"ticket-{ticket}")
    return str(number)


@pytest.mark.asyncio
async def test_an_agent_is_still_told_of_a_ticket_whose_customer_was_erased_while_it_waited(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """The agent's webhook is down when the ticket is assigned; the customer is erased while
    the assignment is retried; the webhook comes back: the agent is told, "erased" where the
    customer's subject was, and nothing the customer wrote reaches them."""
    with smtp_server() as smtp, http_receiver(failing={"/agents/li.na"}) as http:
        desk = notify_settings(
            await intake_clock(settings), tmp_path, smtp, http, notify_max_attempts=10**6
        )
        async with running(intake(desk)), running(notify(desk)):
            number = await assigned_to_li_na(kafka, "erase-2", after_receipt_read=True)
            conn = await connect(desk.require_database_url(), schema="notify")
            try:

                async def tried() -> int:
                    return int(
                        await conn.fetchval(
                            "SELECT coalesce(max(attempts), 0) FROM deliveries "
                            "WHERE template = 'assignment'"
                        )
                    )

                await eventually(tried, lambda attempts: attempts >= 1, what="tried")
                store = KeyStore(MasterKey.from_settings(desk))
                ref = await store.find(conn, f"email:{CUSTOMER}")
                assert ref is not None
                assert await store.erase(conn, ref, datetime.now(UTC))
                erased_at = await tried()
                await eventually(tried, lambda attempts: attempts > erased_at, what="retried")
            finally:
                await conn.close()
            http.failing.clear()  # the webhook is back
            [sent] = await kafka.await_records(
                EVENTS, lambda r: kind("sent")(r) and data(r)["template"] == "assignment"
            )
    posted = agent_notices(http, "li.na", "assignment")  # refused, until the last
    subjects = [p["subject"] for p in posted]
    before = subjects.count(f"新工单 {number}：打印机卡纸")
    assert before >= 1 and subjects[before:] == [f"新工单 {number}：erased"] * (
        len(posted) - before
    )
    assert data(sent)["recipient"] == "agent:li.na"
    told = posted[-1]
    assert number in told["text"] and "打印机" not in json.dumps(told, ensure_ascii=False)
    assert smtp.to(CUSTOMER), "the acknowledgement went out before the erasure"


@pytest.mark.asyncio
async def test_a_receiver_quoting_the_notice_it_refused_is_kept_only_sealed_and_settled_once(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """li.na's receiver refuses the assignment quoting it — the customer's subject, name and
    address — with a NUL in its answer. The notice fails once, for good: the answer is in its
    ``notification.failed`` only sealed for the customer, and nowhere in clear (logs, dead
    letter and ``deliveries`` say "HTTP 400"). A NUL once made the group commit that held
    it fail, and every notice in it was sent again at each lease, this one without end."""
    quoted = "cannot take 打印机卡纸 from 王芳 <wang.fang@example.com>\x00".encode()
    with smtp_server() as smtp, http_receiver() as http:
        http.answers["/agents/li.na"] = (400, quoted)
        desk = notify_settings(await intake_clock(settings), tmp_path, smtp, http)
        async with running(intake(desk)), running(notify(desk)):
            await assigned_to_li_na(kafka, "refuse-1")
            [failed] = await kafka.await_records(
                EVENTS, lambda r: kind("failed")(r) and data(r)["template"] == "assignment"
            )
            await asyncio.sleep(3)  # past the 2 s lease: a notice left unsettled would go again
            conn = await connect(desk.require_database_url(), schema="notify")
            try:
                rows = await conn.fetch(
                    "SELECT template, status, attempts, last_error FROM deliveries"
                )
                keys = await keys_for(KeyStore(MasterKey.from_settings(desk)), conn, [data(failed)])
            finally:
                await conn.close()
    assert len(http.at("/agents/li.na")) == 1, "refused once, never sent again"
    assert sorted(tuple(r) for r in rows) == [
        ("acknowledgement", "sent", 1, None),
        ("assignment", "failed", 1, "HTTP 400"),
    ]
    raw = failed.value.decode()
    assert not any(s in raw for s in ("打印机", "王芳", "wang.fang", "\\u0000")), raw
    assert keys.reveal_json(data(failed))["error"] == (
        "HTTP 400: cannot take 打印机卡纸 from 王芳 <w***@example.com>\ufffd"
    )

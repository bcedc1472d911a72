"""Notices kept sealed under their customer until sent; an erased customer's are never sent."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.intake.app import build as intake
from services.notify.app import build as notify
from services.notify.rules import Notice, NoticeFacts
from services.notify.sealing import kept, opened, withheld
from services.notify.storage import Delivery
from shared.database import connect
from shared.keystore import KeyStore, MasterKey
from shared.local.sinks import http_receiver, smtp_server
from shared.personal import ERASED, DataKeys
from shared.settings import Settings
from tests.intake.requests import encode, intake_clock, valid
from tests.notify.test_notify import EVENTS, data, kind, notify_settings
from tests.support.kafka import KafkaProbe
from tests.support.services import running
from tests.support.waiting import eventually

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
    return Delivery(
        1, n.notice_key, n.ticket_id, n.number, n.cause_event_id, n.recipient, "email",
        n.address or "", n.template, n.language, n.subject, n.body, "v1", 1,
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

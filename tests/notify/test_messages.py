"""What chat, web, api and phone customers are told (the acknowledgement, agents' replies) on
``customer.messages``: real broker and PostgreSQL, intake, dispatch and notify running."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.dispatch.app import build as dispatch
from services.intake.app import build as intake
from services.notify.app import build as notify
from shared.database import connect
from shared.keystore import KeyStore, MasterKey
from shared.local.sinks import http_receiver, smtp_server
from shared.settings import Settings
from tests.intake.requests import encode, intake_clock, valid
from tests.notify.support import notify_policy
from tests.support.kafka import KafkaProbe
from tests.support.personal import opened
from tests.support.services import running

CUSTOMER_ID = "C77-chat-customer"
"""Long enough that no ciphertext or signature holds it by chance (as base64, "C77" alone turned
up in one record of a fresh clone's run: about a 0.4 % chance a record)."""


@asynccontextmanager
async def _desk(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[Settings, Any]]:
    """intake, dispatch and notify running, notify's mail and webhooks at local sinks."""
    with smtp_server() as smtp, http_receiver() as http:
        desk = settings.replace(
            policy_file=notify_policy(tmp_path / "policy.yaml", http), smtp_port=smtp.port
        )
        # The requests were received on a fixed day: intake's clock is driven to it.
        received = await intake_clock(desk)
        async with running(intake(received)), running(dispatch(desk)), running(notify(desk)):
            yield desk, smtp


async def _chat_ticket(kafka: KafkaProbe, session: str) -> dict[str, Any]:
    """A chat customer's request, as dispatch assigned it."""
    customer = {"name": "Ann", "email": "ann@example.com", "customer_id": CUSTOMER_ID}
    chat = valid(session, channel="chat", customer={**customer, "language": "en"})
    await kafka.publish("requests.incoming", encode(chat))
    [assigned] = await kafka.await_records(
        "dispatch.events",
        lambda r: r.header("ce_type") == "servicedesk.ticket.assigned.v1",
    )
    ticket: dict[str, Any] = json.loads(assigned.value)["data"]
    return ticket


async def _accept_and_reply(kafka: KafkaProbe, ticket: dict[str, Any], message: str) -> None:
    """The assignee's commands, as their desk sends them."""
    for kind, fields in [("accept", {}), ("respond", {"message": message})]:
        body = {
            "command_id": str(uuid.uuid4()),
            "type": kind,
            "ticket_number": ticket["number"],
            "actor": ticket["agent_id"],
            **fields,
        }
        await kafka.command("tickets.commands", body, key=ticket["number"])


@pytest.mark.asyncio
async def test_a_chat_customers_acknowledgement_and_reply_are_published_once_for_its_adapter(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    async with _desk(settings, tmp_path) as (_, smtp):
        ticket = await _chat_ticket(kafka, "chat-session-7")
        await _accept_and_reply(kafka, ticket, "Which tray?")
        await kafka.await_records(
            "customer.messages", lambda r: b"agent_reply" in r.value, timeout=60
        )
        published = await kafka.all_records("customer.messages", settle=2.0)
        outcomes = await kafka.all_records("notify.events", settle=0.5)
    assert {r.header("ce_type") for r in published} == {"servicedesk.customer.message.v1"}
    for record in published:
        assert b"Which tray?" not in record.value and CUSTOMER_ID.encode() not in record.value
    messages: list[dict[str, Any]] = [
        await opened(settings, json.loads(r.value)["data"]) for r in published
    ]
    assert [m["template"] for m in messages] == ["acknowledgement", "agent_reply"]
    [ack, message] = messages
    assert ticket["number"] in ack["text"]
    assert (message["channel"], message["conversation"]) == ("chat", "chat-session-7")
    assert (message["customer_id"], message["text"]) == (CUSTOMER_ID, "Which tray?")
    assert message["notice_key"].endswith(":customer:agent_reply")
    sent = [json.loads(r.value)["data"] for r in outcomes]
    assert [(s["template"], s["channel"]) for s in sent if s["template"] == "agent_reply"] == [
        ("agent_reply", "messages")
    ]
    assert smtp.to("ann@example.com") == [], "a chat customer hears through the chat adapter"


@pytest.mark.asyncio
async def test_an_erased_customer_is_not_written_to_again(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """An agent's reply after the erasure went out as a message reading "erased" (found from
    outside, under `desk up`); now every notice to that customer fails ``erased`` unsent."""
    async with _desk(settings, tmp_path) as (desk, _):
        ticket = await _chat_ticket(kafka, "chat-session-erased")
        await kafka.await_records("customer.messages", lambda r: b"acknowledgement" in r.value)
        conn = await connect(desk.require_database_url())
        try:
            store = KeyStore(MasterKey.from_settings(desk))
            ref = await store.find(conn, f"id:{CUSTOMER_ID}")
            assert ref is not None
            assert await store.erase(conn, ref, datetime.now(UTC))
        finally:
            await conn.close()
        await _accept_and_reply(kafka, ticket, "Which tray?")
        [failed] = await kafka.await_records(
            "notify.events",
            lambda r: (
                r.header("ce_type") == "servicedesk.notification.failed.v1"
                and b"agent_reply" in r.value
            ),
            timeout=60,
        )
        published = await kafka.all_records("customer.messages", settle=2.0)
    assert [json.loads(r.value)["data"]["template"] for r in published] == ["acknowledgement"]
    failure = json.loads(failed.value)["data"]
    assert (failure["template"], failure["reason"]) == ("agent_reply", "erased")

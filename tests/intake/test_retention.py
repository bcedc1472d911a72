"""Retention (services/intake/retention.py), with intake running on a driven clock: a customer's
data key is destroyed a policy period after their last ticket closed — not before, and not while
another ticket of theirs is open — and intake's dead letters older than it are purged."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.dispatch.events import TicketClosed
from services.intake.app import build
from shared.database import connect
from shared.keystore import KeyStore, identity_of
from shared.settings import Settings
from tests.conftest import SettingsFactory
from tests.intake.requests import RECEIVED_AT, encode, intake_clock, valid
from tests.support.events import publish_event
from tests.support.kafka import KafkaProbe
from tests.support.policies import shipped
from tests.support.services import running
from tests.support.time import DrivenTime
from tests.support.waiting import eventually

START = datetime.fromisoformat(RECEIVED_AT) + timedelta(minutes=1)
ERASED = "servicedesk.customer.erased.v1"


def data(record: Any) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(record.value)["data"]
    return found


async def with_retention(make_settings: SettingsFactory, tmp_path: Path) -> Settings:
    document = shipped()
    document["intake"]["retention"] = "30d"
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(document, allow_unicode=True))
    settings = make_settings(policy_file=policy, processed_purge_interval="100ms")
    return await intake_clock(settings, START)


async def closed_ticket(kafka: KafkaProbe, pool: Any, customer: dict[str, str]) -> dict[str, Any]:
    """A ticket of ``customer``'s, received and then closed by dispatch at START, as intake's
    ticket index has it: the receipt's data."""
    await kafka.publish("requests.incoming", encode(valid("a-1", customer=customer)))
    [received] = await kafka.await_records(
        "intake.events", lambda r: r.header("ce_type") == "servicedesk.ticket.received.v1"
    )
    ticket = data(received)
    closed = TicketClosed(ticket_id=ticket["ticket_id"], number=ticket["number"], actor="system")
    await publish_event(
        kafka,
        "dispatch.events",
        closed,
        stream_id=f"ticket-{ticket['ticket_id']}",
        subject=ticket["ticket_id"],
        time=START,
    )
    await eventually(
        lambda: pool.fetchval("SELECT closed_at FROM tickets"),
        lambda at: at is not None,
        what="closure recorded",
    )
    return ticket


@pytest.mark.asyncio
async def test_a_customers_key_is_destroyed_a_retention_after_their_last_ticket_closed(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = await with_retention(make_settings, tmp_path)
    kafka = KafkaProbe(settings)
    time = DrivenTime(settings, "intake")
    ann = {"name": "Ann", "email": "ann@example.com"}
    bob = {"name": "Bob", "email": "bob@example.com"}
    service = build(settings)
    try:
        async with running(service):
            await kafka.publish("requests.incoming", encode(valid("a-1", customer=ann)))
            await kafka.publish("requests.incoming", encode(valid("a-2", customer=ann)))
            await kafka.publish("requests.incoming", encode(valid("b-1", customer=bob)))
            received = await kafka.await_records(
                "intake.events",
                lambda r: r.header("ce_type") == "servicedesk.ticket.received.v1",
                count=3,
            )
            tickets = {data(r)["channel_message_id"]: data(r) for r in received}
            for message_id in ("a-1", "b-1"):  # a-2, Ann's other ticket, stays open
                ticket = tickets[message_id]
                closed = TicketClosed(
                    ticket_id=ticket["ticket_id"], number=ticket["number"], actor="system"
                )
                await publish_event(
                    kafka,
                    "dispatch.events",
                    closed,
                    stream_id=f"ticket-{ticket['ticket_id']}",
                    subject=ticket["ticket_id"],
                    time=START,
                )

            async def closed_count() -> int:
                found: int = await service.pool.fetchval(
                    "SELECT count(*) FROM tickets WHERE closed_at IS NOT NULL"
                )
                return found

            await eventually(closed_count, lambda n: n == 2, what="closures recorded")
            await service.pool.execute(
                'INSERT INTO dead_letters (consumer, topic, partition, "offset", value, headers, '
                "reason, error, attempts, recorded_at) VALUES ('requests', 'x', 0, 1, "
                "'\\x7b7d', '{}', 'r', 'e', 1, $1), ('requests', 'x', 0, 2, '\\x7b7d', '{}', "
                "'r', 'e', 1, now())",
                START - timedelta(days=60),
            )

            await time.set(START + timedelta(days=29))  # not yet: five rounds go by
            await asyncio.sleep(0.5)
            early = await service.pool.fetchval(
                "SELECT count(*) FROM subject_keys WHERE erased_at IS NOT NULL"
            )
            assert early == 0
            bob_ref = tickets["b-1"]["customer"]["ref"]
            ann_ref = tickets["a-1"]["customer"]["ref"]
            assert ann_ref == tickets["a-2"]["customer"]["ref"]

            await time.set(START + timedelta(days=31))
            [erased] = await kafka.await_records(
                "intake.events", lambda r: r.header("ce_type") == ERASED
            )
            left = await service.pool.fetchval("SELECT count(*) FROM dead_letters")
    finally:
        await kafka.close()
    assert data(erased)["ref"] == bob_ref and data(erased)["erased_by"] == "retention"
    assert left == 1, "the dead letter older than the retention is purged, the newer kept"
    conn = await connect(settings.require_database_url())
    try:
        found = await conn.fetch("SELECT ref, erased_at IS NOT NULL FROM intake.subject_keys")
        rows = {r[0]: r[1] for r in found}
    finally:
        await conn.close()
    assert rows == {bob_ref: True, ann_ref: False}, "Ann has an open ticket: kept"


@pytest.mark.asyncio
async def test_a_customer_writing_again_as_retention_runs_keeps_the_key_of_the_new_ticket(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """A returning customer's request in flight when the retention round comes: the round waits
    for the batch that met the customer, then sees its new open ticket and keeps the key —
    rather than destroying the key the new ticket was just sealed under."""
    settings = await with_retention(make_settings, tmp_path)
    kafka = KafkaProbe(settings)
    time = DrivenTime(settings, "intake")
    ann = {"name": "Ann", "email": "ann@example.com"}
    service = build(settings)

    async def key_erased(ref: str) -> bool:
        erased: bool = await service.pool.fetchval(
            "SELECT erased_at IS NOT NULL FROM subject_keys WHERE ref = $1", ref
        )
        return erased

    try:
        async with running(service):
            ticket = await closed_ticket(kafka, service.pool, ann)
            ref = ticket["customer"]["ref"]
            batch = await connect(settings.require_database_url())
            try:
                async with batch.transaction():  # Ann's second request, as a batch records it
                    identity = identity_of(None, "ann@example.com", None)
                    assert identity is not None
                    met = (await KeyStore(settings).subjects(batch, [identity]))[identity]
                    assert met.ref == ref
                    await batch.execute(
                        "INSERT INTO intake.tickets (ticket_id, number, channel, "
                        "channel_message_id, received_at, recorded_at, customer_name, language, "
                        "subject, customer_ref) VALUES (gen_random_uuid(), 'T-2', 'email', "
                        "'a-2', $1, $1, '[sealed]', 'en', '[sealed]', $2)",
                        START,
                        ref,
                    )
                    await time.set(START + timedelta(days=31))  # retention's rounds come
                    await asyncio.sleep(0.5)
                    assert not await key_erased(ref), "the round waits for the batch"
            finally:
                await batch.close()
            await asyncio.sleep(0.5)  # rounds that see the new ticket open
            assert not await key_erased(ref), "a customer with an open ticket is kept"

            await service.pool.execute("UPDATE tickets SET closed_at = $1", START)
            await eventually(lambda: key_erased(ref), what="then forgotten")
    finally:
        await kafka.close()


@pytest.mark.asyncio
async def test_a_reply_to_a_ticket_closed_long_ago_keeps_the_customer_a_retention_longer(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """A customer answering a ticket that closed longer ago than the retention is on their way
    to a follow-up ticket (dispatch answers the reply): their key must still be there when it
    comes, so the retention counts from the reply, not from the closing."""
    settings = await with_retention(make_settings, tmp_path)
    kafka = KafkaProbe(settings)
    time = DrivenTime(settings, "intake")
    ann = {"name": "Ann", "email": "ann@example.com"}
    service = build(settings)

    async def erased() -> bool:
        found: bool = await service.pool.fetchval(
            "SELECT bool_or(erased_at IS NOT NULL) FROM subject_keys"
        )
        return found

    try:
        async with running(service):
            ticket = await closed_ticket(kafka, service.pool, ann)
            later = START + timedelta(days=29)
            await time.set(later)
            reply = valid(
                "a-2",
                customer=ann,
                reply_to_ticket=ticket["number"],
                received_at=later.isoformat(),
            )
            await kafka.publish("requests.incoming", encode(reply))
            await kafka.await_records(
                "intake.events",
                lambda r: r.header("ce_type") == "servicedesk.ticket.customer_replied.v1",
            )
            await time.set(START + timedelta(days=31))  # a retention after the closing
            await asyncio.sleep(0.5)  # five rounds
            assert not await erased(), "replied to two days ago: kept"
            await time.set(later + timedelta(days=31))  # a retention after the reply
            await eventually(erased, what="then forgotten")
    finally:
        await kafka.close()

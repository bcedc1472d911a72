"""intake end to end: real broker, real PostgreSQL, the service running."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio

from services.intake.app import build
from shared.deadletter import Record
from shared.settings import Settings
from tests.conftest import SettingsFactory
from tests.intake.requests import BAD_INPUTS, encode, intake_clock, valid
from tests.support.kafka import KafkaProbe, rewind_group
from tests.support.personal import opened
from tests.support.services import running, running_together
from tests.support.waiting import eventually

INCOMING, EVENTS, REJECTED = "requests.incoming", "intake.events", "requests.rejected"


@pytest_asyncio.fixture
async def settings(make_settings: SettingsFactory) -> Settings:
    """This module's requests were received on 2026-11-20 (``valid``): intake's clock says so."""
    return await intake_clock(make_settings())


def data(record: Record) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(record.value)["data"]
    return value


def of_type(name: str) -> Any:
    return lambda r: r.header("ce_type") == f"servicedesk.ticket.{name}.v1"


@pytest.mark.asyncio
async def test_a_request_becomes_a_numbered_received_and_triaged_ticket(
    settings: Settings, kafka: KafkaProbe
) -> None:
    async with running(build(settings)):
        await kafka.publish(INCOMING, encode(valid("m-1")), key="email:m-1")
        received, triaged = await kafka.await_records(
            EVENTS, lambda r: r.header("ce_type") != "", count=2
        )
    assert received.header("ce_type") == "servicedesk.ticket.received.v1"
    assert triaged.header("ce_type") == "servicedesk.ticket.triaged.v1"
    assert "wang.fang@example.com" not in received.value.decode()
    assert "三楼的打印机" not in json.dumps(data(received), ensure_ascii=False)
    ticket, triage = await opened(settings, data(received)), data(triaged)
    assert ticket["customer"]["ref"] == data(received)["customer"]["email"]["ref"]
    assert re.fullmatch(r"REQ-2026-\d{6}", ticket["number"])
    assert ticket["number"] == triage["number"] == "REQ-2026-000001"
    assert ticket["channel"] == "email"
    assert ticket["customer"]["email"] == "wang.fang@example.com"
    assert ticket["description"] == "三楼的打印机一直卡纸，无法打印。"
    assert (triage["complexity"], triage["category"], triage["rule"]) == (
        "general",
        "fault",
        "hardware-fault",
    )
    assert triage["policy_version"].startswith("sha256:")
    assert received.key == triaged.key == f"ticket-{ticket['ticket_id']}".encode()
    assert received.header("ce_subject") == ticket["ticket_id"]


@pytest.mark.asyncio
async def test_the_same_request_three_times_and_to_two_instances_is_one_ticket(
    settings: Settings, kafka: KafkaProbe
) -> None:
    first, second = build(settings), build(settings)
    async with running_together(first, second):
        # An adapter retrying, and one that forgot the key: copies land on every partition,
        # so both instances get one at the same time.
        raw = encode(valid("dup-1"))
        for partition in (0, 1, 2):
            await kafka.publish(INCOMING, raw, partition=partition)
        await kafka.publish(INCOMING, raw, key="email:dup-1")
        await kafka.publish(INCOMING, encode(valid("other")), key="email:other")

        received = await kafka.await_records(EVENTS, of_type("received"), count=2)
        await kafka.all_records(INCOMING)
        everything = await kafka.all_records(EVENTS)
        tickets = await first.pool.fetch("SELECT channel_message_id, number FROM tickets")
    ids = sorted(data(r)["channel_message_id"] for r in everything if of_type("received")(r))
    assert ids == ["dup-1", "other"]
    assert len(received) == 2
    assert sorted(t["channel_message_id"] for t in tickets) == ["dup-1", "other"]


@pytest.mark.asyncio
async def test_numbers_are_unique_across_instances_and_restarts(
    settings: Settings, kafka: KafkaProbe
) -> None:
    first, second = build(settings), build(settings)
    async with running_together(first, second):
        for i in range(60):
            await kafka.publish(INCOMING, encode(valid(f"n-{i}")), partition=i % 3)
        await kafka.await_records(EVENTS, of_type("received"), count=60)
    async with running(build(settings)):
        await kafka.publish(INCOMING, encode(valid("after-restart")), key="x")
        await kafka.await_records(EVENTS, of_type("received"), count=61)
    received = [data(r) for r in await kafka.all_records(EVENTS) if of_type("received")(r)]
    numbers = [int(r["number"].split("-")[2]) for r in received]
    assert len(numbers) == len(set(numbers)) == 61
    after = next(
        n
        for r, n in zip(received, numbers, strict=True)
        if r["channel_message_id"] == "after-restart"
    )
    assert after == max(numbers), "a restart continues the count, it never starts over"
    assert all(r["number"].startswith("REQ-2026-") for r in received)


@pytest.mark.asyncio
async def test_the_year_of_a_number_is_the_policys_local_year(
    settings: Settings, kafka: KafkaProbe
) -> None:
    await intake_clock(settings, datetime(2026, 12, 31, 18, 0, tzinfo=UTC))
    async with running(build(settings)):
        # 2026-12-31 17:30 UTC is already 2027 in Shanghai, the default policy's time zone.
        await kafka.publish(INCOMING, encode(valid("ny", received_at="2026-12-31T17:30:00Z")))
        await kafka.publish(INCOMING, encode(valid("old", received_at="2026-12-31T15:30:00Z")))
        records = await kafka.await_records(EVENTS, of_type("received"), count=2)
    numbers = {data(r)["channel_message_id"]: data(r)["number"] for r in records}
    assert numbers == {"ny": "REQ-2027-000001", "old": "REQ-2026-000001"}


@pytest.mark.asyncio
async def test_a_reply_to_a_known_ticket_is_recorded_on_that_ticket(
    settings: Settings, kafka: KafkaProbe
) -> None:
    service = build(settings)
    async with running(service):
        await kafka.publish(INCOMING, encode(valid("orig")), key="email:orig")
        [received] = await kafka.await_records(EVENTS, of_type("received"))
        number = data(received)["number"]
        reply = valid(
            "reply-1", subject="Re: 打印机卡纸", description="还是不行", reply_to_ticket=number
        )
        await kafka.publish(INCOMING, encode(reply), key="email:reply-1")
        await kafka.publish(INCOMING, encode(reply), key="email:reply-1")  # redelivered
        [replied] = await kafka.await_records(EVENTS, of_type("customer_replied"))
        await kafka.all_records(INCOMING)
        replies = await service.pool.fetchval(
            "SELECT replies FROM tickets WHERE number = $1", number
        )
    assert data(replied)["ticket_id"] == data(received)["ticket_id"]
    assert data(replied)["body"]["ref"] == data(received)["customer"]["ref"]
    assert (await opened(settings, data(replied)))["body"] == "还是不行"
    assert replied.key == received.key
    assert replies == 1


@pytest.mark.asyncio
async def test_a_reply_from_another_sender_than_the_tickets_customer_is_a_ticket_of_its_own(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """Named by number or threaded onto the customer's own message, a reply from someone else
    touches nothing of that ticket: it opens an unlinked ticket for its sender. The customer's
    own reply, by the phone number the ticket has, is a reply."""
    phone = {"name": "王芳", "email": "wang.fang@example.com", "phone": "+8613800138000"}
    stranger = {"name": "Mallory", "email": "mallory@example.net"}
    async with running(build(settings)):
        await kafka.publish(INCOMING, encode(valid("orig", customer=phone)), key="email:orig")
        [received] = await kafka.await_records(EVENTS, of_type("received"))
        number = data(received)["number"]
        by_number = valid("m-1", customer=stranger, channel="web", reply_to_ticket=number)
        by_thread = valid("m-2", customer=stranger, in_reply_to=["orig"])
        by_phone = valid(
            "m-3",
            channel="phone",
            customer={"name": "王芳", "phone": "+86 138 0013 8000"},
            reply_to_ticket=number,
        )
        for request in (by_number, by_thread, by_phone):
            await kafka.publish(INCOMING, encode(request))
        await kafka.await_records(EVENTS, of_type("received"), count=3)
        await kafka.await_records(EVENTS, of_type("customer_replied"))
        events = await kafka.all_records(EVENTS, settle=1.0)

    [replied] = [data(r) for r in events if of_type("customer_replied")(r)]
    assert (replied["number"], replied["channel_message_id"]) == (number, "m-3")
    others = {
        data(r)["channel_message_id"]: await opened(settings, data(r))
        for r in events
        if of_type("received")(r) and data(r)["number"] != number
    }
    assert set(others) == {"m-1", "m-2"}
    assert all(t["customer"]["email"] == "mallory@example.net" for t in others.values())
    assert not any(t.get("follows_up") for t in others.values())


@pytest.mark.asyncio
async def test_every_bad_input_is_rejected_with_its_reason_and_the_next_request_goes_through(
    settings: Settings, kafka: KafkaProbe
) -> None:
    service = build(settings)
    async with running(service):
        for _, raw, _, _ in BAD_INPUTS:
            await kafka.publish(INCOMING, raw, partition=0)
        await kafka.publish(INCOMING, encode(valid("good-after-bad")), partition=0)

        rejected = await kafka.await_records(REJECTED, lambda r: True, count=len(BAD_INPUTS))
        [ticket] = await kafka.await_records(EVENTS, of_type("received"))
        assert all((await service.readiness()).values())
    by_offset = {data(r)["source"]["offset"]: data(r) for r in rejected}
    assert len(by_offset) == len(BAD_INPUTS)
    for offset, (case, raw, reason, field) in enumerate(BAD_INPUTS):
        got = by_offset[offset]
        assert (got["reason"], got["field"]) == (reason, field), case
        assert got["original_size"] == len(raw)
        assert got["truncated"] == (len(raw) > 4096)
        assert got["source"]["topic"] == settings.topic(INCOMING)
    assert data(ticket)["channel_message_id"] == "good-after-bad"
    unknown_reply = next(d for d in by_offset.values() if d["reason"] == "unknown_reply_ticket")
    assert unknown_reply["channel_message_id"] == "bad"
    assert "REQ-2026-999999" in unknown_reply["message"]


@pytest.mark.asyncio
async def test_the_ticket_index_rebuilds_from_events(settings: Settings, kafka: KafkaProbe) -> None:
    from shared.projection import rebuild

    service = build(settings)
    async with running(service):
        for i in range(12):
            await kafka.publish(INCOMING, encode(valid(f"r-{i}")), key=f"email:r-{i}")
        [first] = await kafka.await_records(
            EVENTS, lambda r: data(r).get("channel_message_id") == "r-0"
        )
        reply = valid("r-reply", reply_to_ticket=data(first)["number"])
        await kafka.publish(INCOMING, encode(reply))
        await kafka.await_records(EVENTS, of_type("customer_replied"))

        async def snapshot() -> list[Any]:
            rows = await service.pool.fetch("SELECT * FROM tickets ORDER BY number")
            return [dict(r) for r in rows]

        live = await eventually(snapshot, lambda rows: len(rows) == 12)
        async with service.pool.acquire() as conn:
            await rebuild(conn, service.store, service.projections[0])
        assert await snapshot() == live


@pytest.mark.asyncio
async def test_a_rejection_names_no_contact_data_outside_the_original(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """The field, message and problems of a rejection are for operators and logs: contact data
    in them is masked. The original bytes go back to the adapter sealed under the customer's
    key (the adapter's own key grant opens them)."""
    request = valid("pii")
    request["customer"] = {**request["customer"], "li.lei@example.com": "+8613800001234"}
    async with running(build(settings)):
        await kafka.publish(INCOMING, encode(request))
        [rejected] = await kafka.await_records(REJECTED, lambda r: True)
    got = data(rejected)
    assert got["reason"] == "unknown_field"
    said = json.dumps([got["field"], got["message"], got["problems"]])
    assert "li.lei@example.com" not in said and "***@example.com" in said, said
    assert "wang.fang@example.com" not in rejected.value.decode()
    assert got["customer_ref"] == got["original_preview"]["ref"]
    assert "li.lei@example.com" in (await opened(settings, got))["original_preview"]


@pytest.mark.asyncio
async def test_a_refused_request_redelivered_after_a_crash_is_answered_once(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """A refusal releases the request's claim (sent again, corrected, it is evaluated anew), so
    a crash between intake's commit and its offsets' would once have refused the same record
    twice. Here the group's offset is set back to the refused record, as such a crash leaves it,
    and intake starts again: the adapter hears of it once."""
    late = valid("late", received_at="2000-01-01T09:00:00+08:00")
    async with running(build(settings)) as service:
        group = service.consumers[0].group_id
        await kafka.publish(INCOMING, encode(late), key="email:late")
        [first] = await kafka.await_records(REJECTED, lambda r: True)
    source = data(first)["source"]
    assert data(first)["reason"] == "received_at_out_of_range"
    await rewind_group(settings, group, source["topic"], source["partition"], source["offset"])

    async with running(build(settings)) as service:
        after = valid("after")  # same key, same partition: read after the redelivered record
        await kafka.publish(INCOMING, encode(after), key="email:late")
        await kafka.await_records(EVENTS, of_type("received"))
        rejected = await kafka.all_records(REJECTED, settle=0.5)
        answered = await service.pool.fetchval(
            "SELECT count(*) FROM events WHERE stream_id LIKE 'rejection-%'"
        )
    assert [data(r)["source"]["offset"] for r in rejected] == [source["offset"]]
    assert answered == 1

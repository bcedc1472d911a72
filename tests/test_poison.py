"""Every record on every topic a service consumes — whatever its bytes, size or depth — becomes a
reason-coded rejection (where the topic's contract promises one) or a dead letter, and the valid
message published behind it on the same partition is still applied: no rewind, no stall.

The topics come from the services themselves, so a consumer added later is covered or fails
here until it says what its valid message and its answers are.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from services import build_service, service_names
from services.dispatch.events import FollowUpRequested
from services.intake.contract import Refusal, read_request
from shared.consumer import ConsumerRunner, EventSubscription
from shared.events import new_event_id
from shared.keys import KeyRing
from shared.provenance import seal
from shared.service import Service
from shared.settings import Settings
from tests.dispatch.support import triaged
from tests.intake.requests import encode, valid
from tests.support.credentials import signed
from tests.support.events import assignment, escalation, publish_event
from tests.support.kafka import KafkaProbe
from tests.support.services import running
from tests.support.waiting import eventually


def _envelope(event_type: str) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(new_event_id()),
            "source": "servicedesk/elsewhere",
            "type": event_type,
            "time": "2026-11-20T09:00:00Z",
            "streamid": "s",
            "streamversion": 1,
            "correlationid": "c",
            "data": {"ticket_id": "t", "number": "REQ-2026-000001"},
        }
    ).encode()


UNKNOWN_VERSION = "unknown event version"
POISONS: dict[str, bytes] = {
    "garbage bytes": bytes(range(256)) * 4,
    "invalid UTF-8": b'{"type": "\xc3\x28"}',
    "5,000 nested arrays": b"[" * 5000 + b"]" * 5000,
    "5,000 nested objects": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "1 MiB value": b'{"x": "' + b"a" * (1 << 20) + b'"}',
    "valid JSON of the wrong shape": b'{"hello": "world"}',
    "a 5,000-digit number": b'{"n": 1' + b"0" * 5000 + b"}",
    "unknown event type": _envelope("servicedesk.nothing.happened.v1"),
    UNKNOWN_VERSION: b"",  # the subscription's own first event name at v99, see _poison
}
EVENT_REASONS = {
    "garbage bytes": "undecodable",
    "invalid UTF-8": "undecodable",
    "5,000 nested arrays": "undecodable",
    "5,000 nested objects": "undecodable",
    "1 MiB value": "too_large",
    "valid JSON of the wrong shape": "schema_invalid",
    "a 5,000-digit number": "undecodable",
    "unknown event type": "unknown_type",
    UNKNOWN_VERSION: "unknown_type",
}
"""Dead-letter reasons of an event consumer, per poison."""

Answer = tuple[str, str]
"""("rejection", reason) on the topic's rejection topic, or ("dead letter", reason)."""


def _poison(runner: ConsumerRunner[Any], kind: str) -> bytes:
    subscription = runner.subscription
    if kind == UNKNOWN_VERSION and isinstance(subscription, EventSubscription):
        # a subscription that accepts every type (the console's) is poisoned with one it knows
        known = subscription.accepts or ("servicedesk.ticket.received",)
        return _envelope(f"{known[0]}.v99")
    return POISONS[kind] or _envelope("servicedesk.ticket.triaged.v99")


def expected(runner: ConsumerRunner[Any], topic: str, raw: bytes, kind: str) -> Answer:
    """What the topic's contract promises for a record it cannot apply."""
    if runner.name == "intake.requests":
        refusal = read_request(raw)
        assert isinstance(refusal, Refusal), kind
        return "rejection", refusal.reason
    if runner.name == "dispatch.commands":
        return "rejection", "invalid_command"
    if runner.name == "notify.replays":
        # Its bytes are read as an event consumer reads them; an envelope of any type is not a
        # replayed notice, so the wrong shape.
        reason = EVENT_REASONS[kind]
        return "dead letter", "schema_invalid" if reason == "unknown_type" else reason
    if isinstance(runner.subscription, EventSubscription):
        return "dead letter", EVENT_REASONS[kind]
    raise AssertionError(f"{runner.name} on {topic}: say what its poison answers are")


Applied = Callable[[Service, KafkaProbe], Awaitable[bool]]


async def _claimed(service: Service, consumer: str, message_id: str) -> bool:
    found = await service.pool.fetchval(
        "SELECT count(*) FROM processed_messages WHERE consumer = $1 AND message_id = $2",
        consumer,
        message_id,
    )
    return bool(found)


async def valid_message(runner: ConsumerRunner[Any], topic: str, kafka: KafkaProbe) -> Applied:
    """Publish one valid message for this consumer on partition 0; return how to see it
    applied."""
    logical = topic.removeprefix(kafka.settings.topic_prefix)
    name = runner.name
    if logical == "requests.incoming":
        mid = f"valid-{uuid.uuid4().hex[:8]}"
        now = datetime.now(UTC).isoformat()
        await kafka.publish(logical, encode(valid(mid, received_at=now)), partition=0)
        return lambda s, _: _claimed(s, name, f"email:{mid}")
    if logical in ("tickets.commands", "agents.commands"):
        command_id = str(uuid.uuid4())
        body: dict[str, object] = {"command_id": command_id, "actor": "system"}
        body |= {"type": "set_capacity", "agent_id": "li.na", "capacity": 7}
        if logical == "tickets.commands":
            body = {"command_id": command_id, "actor": "li.na", "type": "add_note"}
            body |= {"ticket_number": "REQ-2026-999999", "note": "n"}
            value, headers = signed(kafka.settings, body)
            await kafka.publish(logical, value, headers=headers, partition=0)

            async def answered(_: Service, probe: KafkaProbe) -> bool:
                found = await probe.read(
                    "tickets.commands.rejected",
                    until=lambda rs: any(command_id.encode() in r.value for r in rs),
                    timeout=1,
                )
                return any(command_id.encode() in r.value for r in found)

            return answered
        value, headers = signed(kafka.settings, body)
        await kafka.publish(logical, value, headers=headers, partition=0)
        return lambda s, _: _claimed(s, name, f"command:system:{command_id}")
    if logical == "notify.deliveries":
        notice = json.dumps({"notice_key": "no-such-notice"}).encode()
        notify_key = KeyRing.from_settings(kafka.settings).signing_key("notify")
        assert notify_key is not None
        sealed = seal(notify_key, notice)  # a replay is one notify dead-lettered
        sent = await kafka.publish(
            logical, notice, key="no-such-notice", headers=sealed, partition=0
        )
        return lambda s, _: _claimed(s, name, f"replay:{topic}/0/{sent.offset}")
    ticket = triaged(1)
    if name == "intake.follow_ups":  # it reads past every other type of dispatch.events
        asked = FollowUpRequested(
            ticket_id=ticket.ticket_id,
            number=ticket.number,
            reason="closed",
            reply_event_id=str(new_event_id()),
            channel="email",
            channel_message_id=f"reply-{uuid.uuid4().hex[:8]}",
            received_at=datetime.now(UTC),
            subject="Re: still broken",
            body="still broken",
        )
        event_id = await publish_event(
            kafka, logical, asked, stream_id="s", subject=ticket.ticket_id, partition=0
        )
        return lambda s, _: _claimed(s, name, event_id)
    event: Any = {
        "intake.events": ticket,
        "dispatch.events": assignment(ticket.ticket_id, ticket.number, "li.na"),
        "sla.events": escalation(ticket.ticket_id, ticket.number, 1),
    }[logical]
    event_id = await publish_event(
        kafka, logical, event, stream_id="s", subject=ticket.ticket_id, partition=0
    )
    return lambda s, _: _claimed(s, name, event_id)


async def _answered(
    kafka: KafkaProbe, service: Service, runner: ConsumerRunner[Any], topic: str, offset: int
) -> Answer | None:
    logical = topic.removeprefix(kafka.settings.topic_prefix)
    letter = await service.pool.fetchrow(
        "SELECT reason FROM dead_letters WHERE consumer = $1 AND topic = $2 AND partition = 0 "
        'AND "offset" = $3',
        runner.name,
        topic,
        offset,
    )
    if letter is not None:
        return "dead letter", letter["reason"]
    rejections = {
        "requests.incoming": "requests.rejected",
        "tickets.commands": "tickets.commands.rejected",
        "agents.commands": "agents.commands.rejected",
    }
    if logical not in rejections:
        return None
    key = f"rejection-{topic}-0-{offset}".encode()
    found = await kafka.read(rejections[logical], until=lambda rs: any(r.key == key for r in rs))
    for record in found:
        if record.key == key:
            return "rejection", json.loads(record.value)["data"]["reason"]
    return None


def _consumed(settings: Settings) -> list[tuple[str, str]]:
    """(service, physical topic) for every topic every service consumes."""
    pairs = []
    for name in service_names():
        service = build_service(name, settings)
        pairs += [(name, topic) for runner in service.consumers for topic in runner.topics]
    return pairs


def _runner(service: Service, topic: str) -> ConsumerRunner[Any]:
    [runner] = [r for r in service.consumers if topic in r.topics]
    return runner


WHOLE_SYSTEM_ONLY = ("console",)
"""Services whose poisons are answered in the fault suite only
(``tests/faults/test_inputs.py::test_a_poison_record_on_every_consumed_topic``: every poison on
every topic the console reads, its read models caught up behind them): the console reads the
others' outcomes (rejections, notices), which only the running system makes valid."""


@pytest.mark.asyncio
@pytest.mark.parametrize("name", [n for n in service_names() if n not in WHOLE_SYSTEM_ONLY])
async def test_every_poison_on_every_topic_is_answered_and_the_next_message_applied(
    name: str, settings: Settings, kafka: KafkaProbe
) -> None:
    consumed = [topic for service, topic in _consumed(settings) if service == name]
    assert consumed, f"{name} consumes nothing?"
    service = build_service(name, settings)
    async with running(service):
        sent: list[tuple[ConsumerRunner[Any], str, int, str, bytes]] = []
        checks: list[tuple[str, Applied]] = []
        for topic in consumed:
            runner = _runner(service, topic)
            logical = topic.removeprefix(settings.topic_prefix)
            for kind in POISONS:
                raw = _poison(runner, kind)
                metadata = await kafka.publish(logical, raw, partition=0)
                sent.append((runner, topic, metadata.offset, kind, raw))
            checks.append((topic, await valid_message(runner, topic, kafka)))
        for topic, applied in checks:
            await eventually(
                lambda a=applied: a(service, kafka),  # type: ignore[misc]
                timeout=60,
                what=f"the valid message behind the poisons on {topic}",
            )
        for runner, topic, offset, kind, raw in sent:
            want = expected(runner, topic, raw, kind)
            got = await eventually(
                lambda r=runner, t=topic, o=offset: _answered(kafka, service, r, t, o),  # type: ignore[misc]
                lambda answer: answer is not None,
                timeout=30,
                what=f"an answer to {kind!r} on {topic}",
            )
            assert got == want, f"{kind} on {topic}"
        assert all((await service.readiness()).values())
        letters = await service.pool.fetch(
            'SELECT topic, "offset" FROM dead_letters WHERE published_at IS NOT NULL'
        )
    # Every dead letter also reached its <topic>.dlq (a 1 MiB value truncated to fit).
    for topic in consumed:
        offsets = {o for t, o in letters if t == topic}
        if not offsets:
            continue
        logical = topic.removeprefix(settings.topic_prefix)
        records = await kafka.await_records(
            f"{logical}.dlq", lambda r: r.header("dlq_consumer") is not None, count=len(offsets)
        )
        assert {int(r.header("dlq_offset") or -1) for r in records} >= offsets
        assert all(len(r.value) <= settings.kafka_max_message_bytes for r in records)


def _out_of_any_calendar(event: Any, **dates: datetime) -> Any:
    """The event with dates no calendar can hold: built unvalidated, as a foreign producer
    might publish it."""
    return type(event).model_construct(**{**dict(event), **dates})


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["sla", "notify"])
async def test_a_date_no_calendar_can_hold_is_refused_when_read_never_overflows(
    name: str, settings: Settings, kafka: KafkaProbe
) -> None:
    """Intake refuses such dates; a record carrying one anyway (another producer, an old event)
    is a dead letter at once (schema_invalid, one attempt), never an OverflowError retried."""
    from services.intake.events import TicketReceived
    from tests.notify.support import received
    from tests.sla.support import classified

    first = datetime.fromisoformat("0001-01-01T00:00:00+14:00")
    last = datetime.fromisoformat("9999-12-31T23:59:59-14:00")
    service = build_service(name, settings)
    async with running(service):
        if name == "sla":
            events = [("dispatch.events", _out_of_any_calendar(classified(1), received_at=last))]
        else:
            ticket: TicketReceived = received(1)
            events = [
                ("intake.events", _out_of_any_calendar(ticket, received_at=first)),
                ("intake.events", _out_of_any_calendar(triaged(1), received_at=last)),
            ]
        for topic, event in events:
            await publish_event(kafka, topic, event, stream_id="s", subject=event.ticket_id)

        async def letters() -> list[tuple[str, int, str]]:
            rows = await service.pool.fetch("SELECT reason, attempts, error FROM dead_letters")
            return [(r["reason"], r["attempts"], r["error"]) for r in rows]

        found = await eventually(letters, lambda ls: len(ls) == len(events), timeout=60)
    assert {(reason, attempts) for reason, attempts, _ in found} == {("schema_invalid", 1)}
    assert all("received_at" in error for _, _, error in found), found
    assert not any("Overflow" in error for _, _, error in found)

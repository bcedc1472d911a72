"""The envelope and the registry of versioned event types (pure, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from shared.events import (
    Envelope,
    EventData,
    EventDecodeError,
    EventRegistry,
    UnknownEventType,
    split_type,
)

pytestmark = pytest.mark.unit


def make_registry() -> tuple[EventRegistry, type[EventData], type[EventData]]:
    registry = EventRegistry()

    @registry.register("test.ticket.opened", 1)
    class OpenedV1(EventData):
        title: str

    @registry.register("test.ticket.opened", 2)
    class OpenedV2(EventData):
        subject: str
        priority: str

    @registry.upcaster("test.ticket.opened", from_version=1)
    def _(data: dict[str, Any]) -> dict[str, Any]:
        return {"subject": data.pop("title"), "priority": "normal", **data}

    return registry, OpenedV1, OpenedV2


def test_type_names_carry_their_version() -> None:
    assert split_type("servicedesk.ticket.received.v12") == ("servicedesk.ticket.received", 12)
    for bad in ("ticket", "servicedesk.ticket.received", "a.b.v0", "A.b.v1"):
        with pytest.raises(UnknownEventType):
            split_type(bad)


def test_an_old_version_is_read_as_the_newest_through_upcasters() -> None:
    registry, v1, v2 = make_registry()
    assert v1.event_type() == "test.ticket.opened.v1"
    assert v2.event_type() == "test.ticket.opened.v2"
    old = registry.decode("test.ticket.opened.v1", {"title": "printer jam"})
    assert old == v2(subject="printer jam", priority="normal")
    new = registry.decode("test.ticket.opened.v2", {"subject": "x", "priority": "high"})
    assert new == v2(subject="x", priority="high")


def test_decoding_json_remembers_the_newest_class_until_a_newer_version_registers() -> None:
    registry = EventRegistry()

    @registry.register("test.ticket.noted", 1)
    class NotedV1(EventData):
        text: str

    assert registry.decode_json("test.ticket.noted.v1", '{"text":"a"}') == NotedV1(text="a")

    @registry.register("test.ticket.noted", 2)
    class NotedV2(EventData):
        text: str
        by: str

    @registry.upcaster("test.ticket.noted", from_version=1)
    def _(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "by": "customer"}

    old = registry.decode_json("test.ticket.noted.v1", '{"text":"a"}')
    assert old == NotedV2(text="a", by="customer")
    with pytest.raises(EventDecodeError, match="by"):
        registry.decode_json("test.ticket.noted.v2", '{"text":"a"}')


def test_unknown_future_and_invalid_events_are_refused_clearly() -> None:
    registry, _, _ = make_registry()
    with pytest.raises(UnknownEventType, match="not registered"):
        registry.decode("test.ticket.closed.v1", {})
    with pytest.raises(UnknownEventType, match="newer than the newest known v2"):
        registry.decode("test.ticket.opened.v3", {})
    with pytest.raises(EventDecodeError, match="subject"):
        registry.decode("test.ticket.opened.v2", {"priority": "high"})


def test_registering_a_different_class_under_a_taken_name_fails() -> None:
    registry, _, _ = make_registry()
    with pytest.raises(ValueError, match="already registered"):

        @registry.register("test.ticket.opened", 1)
        class Other(EventData):
            pass


def test_envelope_headers_follow_cloudevents_kafka_binary_mode() -> None:
    event_id = uuid4()
    envelope = Envelope(
        id=event_id,
        source="servicedesk/intake",
        type="servicedesk.ticket.received.v1",
        subject="t-1",
        time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        streamid="ticket-t-1",
        streamversion=3,
        correlationid="corr",
        causationid="cause",
        data={"number": "REQ-2026-000001"},
    )
    headers = dict(envelope.headers())
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == str(event_id).encode()
    assert headers["ce_type"] == b"servicedesk.ticket.received.v1"
    assert headers["ce_source"] == b"servicedesk/intake"
    assert headers["ce_subject"] == b"t-1"
    assert headers["ce_time"] == b"2026-01-02T03:04:05Z"
    assert headers["ce_streamversion"] == b"3"
    assert headers["content-type"] == b"application/cloudevents+json"
    again = Envelope.model_validate_json(envelope.model_dump_json())
    assert again == envelope


def test_envelope_schema_describes_the_data_of_its_type() -> None:
    registry, _, v2 = make_registry()
    schema = registry.envelope_schema(v2)
    assert schema["title"] == "test.ticket.opened.v2"
    assert schema["properties"]["type"]["const"] == "test.ticket.opened.v2"
    assert set(schema["properties"]["data"]["required"]) == {"subject", "priority"}
    assert "specversion" in schema["properties"]

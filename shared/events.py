"""Events: the CloudEvents 1.0 envelope, versioned event types and their registry.

A domain event is a pydantic model registered under a name and a version::

    @event("servicedesk.ticket.received", version=1)
    class TicketReceived(EventData): ...

Its wire type is ``servicedesk.ticket.received.v1``. When a v2 is added, an upcaster turns v1
data into v2 data, so events written years ago stay readable by code that only knows v2. On
Kafka the value is the JSON envelope and the CloudEvents attributes are repeated as binary-mode
``ce_*`` headers, so downstream systems can route without parsing the value.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar
from uuid import UUID, SafeUUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

SPEC_VERSION: Literal["1.0"] = "1.0"
CONTENT_TYPE = "application/cloudevents+json"
_TYPE = re.compile(r"^(?P<name>[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+)\.v(?P<version>[1-9][0-9]*)$")


EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def plausible(value: datetime) -> datetime:
    """``value`` when it is a :data:`Moment`; else ValueError (what it lacks)."""
    if value.utcoffset() is None:
        raise ValueError("needs a time zone offset")
    if not EARLIEST <= value <= LATEST:
        raise ValueError("not between 1900 and 9000: no calendar can compute with it")
    return value


Moment = Annotated[datetime, AfterValidator(plausible)]
"""A point in time an event carries and a consumer computes with (deadlines, calendars): with a
time zone, and far enough from the ends of the calendar that adding a target or converting to
UTC cannot overflow. A record carrying another is refused when read (``schema_invalid``)."""


class EventData(BaseModel):
    """Payload of a domain event. Immutable; unknown fields from newer writers are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_name: ClassVar[str]
    event_version: ClassVar[int]
    _event_type: ClassVar[str]

    @classmethod
    def event_type(cls) -> str:
        """``<name>.v<version>``, the CloudEvents ``type``."""
        return cls._event_type


class Envelope(BaseModel):
    """CloudEvents 1.0 structured envelope plus the event-sourcing extension attributes.

    Extension attribute names are lower-case letters only, as CloudEvents requires.
    """

    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = SPEC_VERSION
    id: UUID
    source: str = Field(description="Producing service, e.g. servicedesk/intake.")
    type: str = Field(description="Versioned event type, e.g. servicedesk.ticket.received.v1.")
    subject: str | None = Field(default=None, description="The ticket the event is about.")
    time: Moment
    datacontenttype: Literal["application/json"] = "application/json"
    streamid: str = Field(description="Event-store stream the event belongs to.")
    streamversion: int = Field(ge=0, description="Position of the event within its stream.")
    correlationid: str = Field(description="Shared by every event one request caused.")
    causationid: str | None = Field(default=None, description="Id of the message that caused it.")
    data: dict[str, Any]

    def headers(self) -> list[tuple[str, bytes]]:
        """CloudEvents Kafka binary-mode headers for this envelope."""
        return ce_headers(
            id=str(self.id),
            source=self.source,
            type=self.type,
            subject=self.subject,
            time=self.time,
            streamid=self.streamid,
            streamversion=self.streamversion,
            correlationid=self.correlationid,
            causationid=self.causationid,
        )


D = TypeVar("D", bound=EventData)


class EnvelopeOf(Envelope, Generic[D]):
    """An envelope whose ``data`` is a given event type: the shape the AsyncAPI document shows."""

    data: D  # type: ignore[assignment]


def ce_headers(
    *,
    id: str,
    source: str,
    type: str,
    subject: str | None,
    time: datetime,
    streamid: str,
    streamversion: int,
    correlationid: str,
    causationid: str | None,
) -> list[tuple[str, bytes]]:
    values = {
        "ce_specversion": SPEC_VERSION,
        "ce_id": id,
        "ce_source": source,
        "ce_type": type,
        "ce_subject": subject,
        "ce_time": format_time(time),
        "ce_streamid": streamid,
        "ce_streamversion": str(streamversion),
        "ce_correlationid": correlationid,
        "ce_causationid": causationid,
        "content-type": CONTENT_TYPE,
    }
    return [(k, v.encode()) for k, v in values.items() if v is not None]


@lru_cache(maxsize=256)
def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, as CloudEvents writes time.

    Cached: every event of one unit of work carries the same time, and the relay formats
    thousands of them a second.
    """
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def split_type(event_type: str) -> tuple[str, int]:
    """``servicedesk.ticket.received.v2`` -> (``servicedesk.ticket.received``, 2)."""
    match = _TYPE.match(event_type)
    if not match:
        raise UnknownEventType(event_type, "not a versioned event type (name.vN)")
    return match["name"], int(match["version"])


def describe_invalid(error: ValidationError, most: int = 5) -> str:
    """Where and how data is invalid, without the values themselves: pydantic quotes them, and
    they may be a customer's address or phone number."""
    problems = error.errors(include_input=False, include_url=False)[:most]
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in problems
    )


class UnknownEventType(ValueError):
    def __init__(self, event_type: str, why: str = "not registered") -> None:
        super().__init__(f"event type {event_type!r}: {why}")
        self.event_type = event_type


class EventDecodeError(ValueError):
    """The envelope is fine but its data does not match the registered type."""


E = TypeVar("E", bound=type[EventData])
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class _Registration:
    cls: type[EventData]
    public: bool


class EventRegistry:
    """Every event type a process knows, its versions, and how to lift old versions."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, int], _Registration] = {}
        self._latest: dict[str, int] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._newest: dict[str, type[EventData]] = {}
        """Event type -> its class, for types that are the newest version of their name."""

    def register(self, name: str, version: int, *, public: bool = True) -> Callable[[E], E]:
        split_type(f"{name}.v{version}")  # validates the name

        def decorate(cls: E) -> E:
            key = (name, version)
            existing = self._types.get(key)
            # Re-importing the defining module registers an equal class again: allowed.
            if existing is not None and existing.cls.__qualname__ != cls.__qualname__:
                raise ValueError(f"{name}.v{version} is already registered")
            cls.event_name = name
            cls.event_version = version
            cls._event_type = f"{name}.v{version}"
            self._types[key] = _Registration(cls, public)
            self._latest[name] = max(version, self._latest.get(name, 0))
            self._newest.clear()  # a newer version makes an older type need upcasting
            return cls

        return decorate

    def upcaster(self, name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register the function that turns ``from_version`` data into ``from_version + 1``."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._upcasters[(name, from_version)] = fn
            return fn

        return decorate

    def knows(self, name: str) -> bool:
        """An event of this name (``servicedesk.ticket.received``) is registered, any version."""
        return name in self._latest

    def decode(self, event_type: str, data: dict[str, Any]) -> EventData:
        """Typed data of the newest version, upcasting older versions step by step."""
        name, version = split_type(event_type)
        latest = self._latest.get(name)
        if latest is None:
            raise UnknownEventType(event_type)
        if version > latest:
            raise UnknownEventType(event_type, f"newer than the newest known v{latest}")
        while version < latest:
            step = self._upcasters.get((name, version))
            if step is None:
                raise UnknownEventType(event_type, f"no upcaster from v{version}")
            data = step(dict(data))
            version += 1
        try:
            return self._types[(name, latest)].cls.model_validate(data)
        except ValidationError as error:
            raise EventDecodeError(f"{event_type}: {describe_invalid(error)}") from error

    def decode_json(self, event_type: str, text: str) -> EventData:
        """:meth:`decode` from the data's JSON text: one parse when no upcasting is needed
        (projections catching up and replays decode every stored event; the class of each
        newest type is remembered)."""
        cls = self._newest.get(event_type)
        if cls is None:
            name, version = split_type(event_type)
            if self._latest.get(name) != version:
                return self.decode(event_type, json.loads(text))
            cls = self._newest[event_type] = self._types[(name, version)].cls
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            raise EventDecodeError(f"{event_type}: {error}") from error

    def public_types(self) -> Iterable[type[EventData]]:
        for (_, _), registration in sorted(self._types.items()):
            if registration.public:
                yield registration.cls

    def envelope_schema(self, cls: type[EventData]) -> dict[str, Any]:
        """JSON Schema of the whole envelope with ``data`` of this type (for docs/events/)."""
        schema = Envelope.model_json_schema()
        data_schema = cls.model_json_schema()
        defs = {**schema.pop("$defs", {}), **data_schema.pop("$defs", {})}
        schema["title"] = cls.event_type()
        schema["description"] = (cls.__doc__ or "").strip()
        schema["properties"]["type"] = {"const": cls.event_type(), "type": "string"}
        schema["properties"]["data"] = data_schema
        if defs:
            schema["$defs"] = defs
        return schema


EVENTS = EventRegistry()
"""The process-wide registry; each service's ``events`` module registers into it on import."""


def event(name: str, version: int = 1, *, public: bool = True) -> Callable[[E], E]:
    """Class decorator registering a domain event in :data:`EVENTS`."""
    return EVENTS.register(name, version, public=public)


def new_event_id() -> UUID:
    """A UUIDv7: random, but ordered by creation time, so the indexes that hold event ids
    (the store's, every consumer's tracking table) grow at one end instead of everywhere."""
    global _random_pool, _random_at  # noqa: PLW0603 - a per-process buffer of randomness
    if _random_at >= len(_random_pool):
        _random_pool, _random_at = os.urandom(16 * 1024), 0
    chunk = _random_pool[_random_at : _random_at + 16]
    _random_at += 16
    value = int.from_bytes(chunk, "big") & _UUID7_RANDOM
    value |= (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80 | _UUID7_MARKS
    # UUID(int=...) re-validates what we just built; at every append that shows. Same object.
    uuid = object.__new__(UUID)
    object.__setattr__(uuid, "int", value)
    object.__setattr__(uuid, "is_safe", _UNKNOWN)
    return uuid


_random_pool, _random_at = b"", 0
_UNKNOWN = SafeUUID.unknown
_UUID7_RANDOM = ~((0xFFFF_FFFF_FFFF << 80) | (0xF << 76) | (0x3 << 62)) & (2**128 - 1)
_UUID7_MARKS = (0x7 << 76) | (0b10 << 62)  # version 7, RFC 4122 variant

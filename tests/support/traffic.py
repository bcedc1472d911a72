"""What the world sends a running system: a channel adapter's requests, an agent desk's
commands, and poison records.

The adapter and the desk behave as real clients do: each record is sent until the broker
acknowledges it (sent again with the same id after a timeout, so a record may reach the topic
twice — the system's de-duplication is what makes that harmless), and each remembers what was
*accepted* (acknowledged), which is what the system then owes an answer for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.intake.contract import INCOMING_TOPIC
from services.intake.demo import DemoTraffic
from shared.credentials import issue_token, sign_command
from shared.kafka import make_producer
from shared.keys import KeyRing
from shared.settings import Settings
from tests.support.observer import Observer, Seen

Clock = Callable[[], datetime]
"""What time the adapter stamps on requests (the system's own, when its time is driven)."""


async def send_until_accepted(
    producer: AIOKafkaProducer,
    topic: str,
    value: bytes,
    key: bytes,
    headers: list[tuple[str, bytes]] | None = None,
    partition: int | None = None,
) -> Any:
    """Send until the broker acknowledges; a timeout sends the same record again."""
    while True:
        try:
            return await producer.send_and_wait(
                topic, value=value, key=key, headers=headers or [], partition=partition
            )
        except KafkaError:
            await asyncio.sleep(0.5)


@dataclass
class Adapter:
    """A channel adapter publishing valid requests to ``requests.incoming``."""

    settings: Settings
    clock: Clock
    run: str = field(default_factory=lambda: f"{int(time.time() * 1000):x}")
    accepted: dict[str, float] = field(default_factory=dict)
    """Request key (``<channel>:<channel_message_id>``) -> wall time the broker acknowledged it."""
    published: dict[str, float] = field(default_factory=dict)
    """Request key -> wall time it was first sent."""
    _producer: AIOKafkaProducer | None = None
    _traffic: DemoTraffic = field(default_factory=lambda: DemoTraffic(seed=13))
    _sent: int = 0

    async def _ensure(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = make_producer(self.settings, client_id="adapter", linger_ms=1)
            await self._producer.start()
        return self._producer

    def request(self) -> tuple[str, bytes]:
        """The next request: the demo mix (no replies, nothing malformed), each with an email
        or a phone, stamped with the system's time."""
        self._sent += 1
        request = self._traffic.request()
        request["channel_message_id"] = f"faults-{self.run}-{self._sent}"
        request["received_at"] = self.clock().isoformat()
        key = f"{request['channel']}:{request['channel_message_id']}"
        return key, json.dumps(request, ensure_ascii=False).encode()

    async def publish(self, count: int = 1) -> list[str]:
        """Publish ``count`` requests one after another, each until accepted."""
        producer = await self._ensure()
        keys = []
        for _ in range(count):
            key, value = self.request()
            self.published[key] = time.time()
            await send_until_accepted(
                producer, self.settings.topic(INCOMING_TOPIC), value, key.encode()
            )
            self.accepted[key] = time.time()
            keys.append(key)
        return keys

    async def burst(self, count: int) -> list[str]:
        """``count`` requests as fast as the broker takes them (sent together, then awaited)."""
        producer = await self._ensure()
        topic = self.settings.topic(INCOMING_TOPIC)
        requests = [self.request() for _ in range(count)]
        now = time.time()
        for key, _ in requests:
            self.published[key] = now
        sends = [
            await producer.send(topic, value=value, key=key.encode()) for key, value in requests
        ]
        results = await asyncio.gather(*sends, return_exceptions=True)
        for (key, value), result in zip(requests, results, strict=True):
            if isinstance(result, BaseException):
                await send_until_accepted(producer, topic, value, key.encode())
            self.accepted[key] = time.time()
        return [key for key, _ in requests]

    async def paced(self, count: int, rate: float) -> list[str]:
        """``count`` requests at ``rate`` a second, each sent at its due time without waiting
        for the previous one's acknowledgement (as a busy adapter does; a benchmark's steady
        load), then every acknowledgement awaited."""
        producer = await self._ensure()
        topic = self.settings.topic(INCOMING_TOPIC)
        started = time.monotonic()
        sent: list[tuple[str, bytes, asyncio.Future[Any]]] = []
        for n in range(count):
            if (wait := started + n / rate - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            key, value = self.request()
            self.published[key] = time.time()
            sent.append((key, value, await producer.send(topic, value=value, key=key.encode())))
        for key, value, future in sent:
            try:
                await future
            except KafkaError:
                await send_until_accepted(producer, topic, value, key.encode())
            self.accepted[key] = time.time()
        return [key for key, _, _ in sent]

    @asynccontextmanager
    async def steady(self, rate: float) -> AsyncIterator[None]:
        """Publish ``rate`` requests a second in the background while the block runs; a
        request the broker is slow to accept delays the next (no catch-up bursts)."""

        async def run() -> None:
            while True:
                started = time.monotonic()
                await self.publish(1)
                await asyncio.sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))

        async with _background(run, "adapter"):
            yield

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


COMPLAINT_ANSWER = {"cause": "A wrong setting", "actions": "Corrected", "compensation": "None"}
"""What the shipped policy asks of a complaint's resolution; any other ticket may state it too."""


@dataclass
class AgentDesk:
    """Agents working their tickets: each ``ticket.assigned`` it sees is accepted, answered,
    resolved and closed by the assignee (four commands in order, keyed by the ticket number),
    each signed under the agent's token as a real desk signs it (tokens from the operators' key,
    stamped with the system's time). Every command the broker accepted is remembered: the
    system owes each exactly one answer — its events, or a rejection naming it."""

    settings: Settings
    observer: Observer
    clock: Clock
    commands: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Command id -> (ticket number, command type), for every command the broker accepted."""
    _queue: asyncio.Queue[tuple[str, str]] = field(default_factory=asyncio.Queue)
    _producer: AIOKafkaProducer | None = None
    _working: bool = False

    def __post_init__(self) -> None:
        self.observer.watch(
            self.settings.topic("dispatch.events"), "servicedesk.ticket.assigned.v1", self._seen
        )

    def _seen(self, seen: Seen, value: bytes) -> None:
        if self._working:
            data = json.loads(value)["data"]
            self._queue.put_nowait((data["number"], data["agent_id"]))

    def token(self, agent: str) -> str:
        key = KeyRing.from_settings(self.settings).issuer_of("agents")
        if key is None:
            raise LookupError("no key vouches for agents (DESK_KEYS_FILE / DESK_KEYS)")
        return issue_token(key, agent, now=self.clock(), ttl=timedelta(hours=8))

    async def work(self, number: str, agent: str) -> None:
        if self._producer is None:
            self._producer = make_producer(self.settings, client_id="agent-desk", linger_ms=1)
            await self._producer.start()
        topic = self.settings.topic("tickets.commands")
        token = self.token(agent)
        steps: list[tuple[str, dict[str, Any]]] = [
            ("accept", {}),
            ("respond", {"message": "We are on it."}),
            ("resolve", {"resolution": "Fixed.", **COMPLAINT_ANSWER}),
            ("close", {}),
        ]
        for kind, extra in steps:
            command_id = f"desk-{number}-{agent}-{kind}"
            command = {"command_id": command_id, "type": kind, "ticket_number": number, **extra}
            value = json.dumps(command).encode()
            await send_until_accepted(
                self._producer, topic, value, number.encode(), sign_command(token, value)
            )
            self.commands[command_id] = (number, kind)

    @asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        """Work every ticket assigned while the block runs."""

        async def run() -> None:
            while True:
                number, agent = await self._queue.get()
                await self.work(number, agent)

        self._working = True
        try:
            async with _background(run, "agent desk"):
                yield
        finally:
            self._working = False
            while not self._queue.empty():
                self._queue.get_nowait()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


# --- poison ------------------------------------------------------------------------------

POISON_KINDS = ("garbage", "deep", "huge", "wrong_shape", "unknown_type", "unknown_version")
"""Records no consumer can apply: bytes that are not UTF-8 JSON, 5,000 nested arrays, a 1 MiB
value, valid JSON of the wrong shape, an event type nobody publishes, a version nobody knows."""


@dataclass(frozen=True)
class Poison:
    """A poison record as the broker accepted it; ``x-desk-poison`` carries ``marker``."""

    marker: str
    kind: str
    topic: str
    partition: int
    offset: int
    event_type: str = ""
    """For an event topic: the real type the poison imitates."""

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


def poison_value(kind: str, marker: str, shape: str, event_type: str = "") -> bytes:
    """The bytes of a poison record of ``kind`` for a topic of ``shape`` (``event``: CloudEvents
    envelopes of ``event_type``; ``command``; ``request``)."""
    if kind == "garbage":
        return b"\xff\xfe\x00garbage " + marker.encode() + random.Random(marker).randbytes(64)
    if kind == "deep":
        return b'{"id": "' + marker.encode() + b'", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    if kind == "huge":
        return json.dumps({"id": marker, "padding": "x" * (1024 * 1024 - 64)}).encode()
    if kind == "wrong_shape":
        return json.dumps({"id": marker, "hello": ["not", "what", "you", "expect"]}).encode()
    if shape == "command" and kind == "unknown_type":
        command = {"command_id": marker, "type": "unheard_of", "ticket_number": marker}
        return json.dumps({**command, "actor": "system"}).encode()
    if shape != "event" or kind not in ("unknown_type", "unknown_version"):
        raise ValueError(f"no {kind} poison for a {shape} topic")
    name = event_type.rpartition(".v")[0]
    unknown = "servicedesk.ticket.unheard_of.v1" if kind == "unknown_type" else f"{name}.v99"
    envelope = {
        "specversion": "1.0",
        "id": str(uuid4()),
        "source": "servicedesk/faults",
        "type": unknown,
        "subject": marker,
        "time": "2026-11-30T00:00:00Z",
        "datacontenttype": "application/json",
        "streamid": f"poison-{marker}",
        "streamversion": 1,
        "correlationid": marker,
        "data": {"ticket_id": marker, "number": marker},
    }
    return json.dumps(envelope).encode()


async def send_poison(
    settings: Settings, topic: str, kind: str, marker: str, shape: str, event_type: str = ""
) -> Poison:
    """Publish one poison record to the logical ``topic`` (accepted, whatever its size)."""
    producer = make_producer(
        settings, client_id="poison", linger_ms=1, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        metadata = await send_until_accepted(
            producer,
            settings.topic(topic),
            poison_value(kind, marker, shape, event_type),
            f"poison-{marker}".encode(),
            headers=[("x-desk-poison", marker.encode())],
        )
    finally:
        await producer.stop()
    return Poison(
        marker, kind, settings.topic(topic), metadata.partition, metadata.offset, event_type
    )


@asynccontextmanager
async def _background(
    run: Callable[[], Coroutine[Any, Any, None]], name: str
) -> AsyncIterator[None]:
    task = asyncio.create_task(run(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task  # a client that failed (not one cancelled) fails the block

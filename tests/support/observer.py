"""Watching a running system's topics from outside: every record seen, and each consumer's lag.

:class:`Observer` follows topics from their beginning in the background and keeps a compact
note of each record (id, type, subject, key, the headers faults are judged by, when it arrived),
so a checker can ask "is every stored event on its topic, and how often?" and a benchmark "when
did this ticket's event arrive?". :class:`ConsumerLag` reads the consumer groups' committed
offsets against the topics' ends, the way an operator's lag exporter does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from shared.kafka import client_options
from shared.settings import Settings

KEPT_HEADERS = ("ce_id", "ce_type", "ce_subject", "ce_causationid")
"""CloudEvents headers kept for every record; every ``dlq_*`` and ``x-desk-*`` header is too."""


@dataclass(frozen=True, slots=True)
class Seen:
    """One record as the observer saw it."""

    topic: str
    partition: int
    offset: int
    key: str
    headers: dict[str, str]
    size: int
    arrived: float
    """Wall time (``time.time()``) the observer read it."""
    stamped: float = 0.0
    """The record's own timestamp (its producer's send time, seconds): when it reached the
    topic, not when the observer happened to poll — what latency benchmarks read."""

    @property
    def event_id(self) -> str | None:
        return self.headers.get("ce_id")

    @property
    def type(self) -> str | None:
        return self.headers.get("ce_type")

    @property
    def subject(self) -> str | None:
        return self.headers.get("ce_subject")


Watcher = Callable[[Seen, bytes], None]


@dataclass
class Observer:
    """Follows ``topics`` (physical names) from their beginning until stopped."""

    settings: Settings
    topics: Sequence[str]
    seen: dict[str, list[Seen]] = field(default_factory=dict)
    patience_ms: int = 50
    """How long a fetch waits for records: the tests read arrival times (``Seen.arrived``); a
    benchmark, which reads the records' own time stamps, waits longer and costs the broker it
    measures less (one fetch of every partition of every topic per wait)."""
    _watchers: list[tuple[str, str | None, Watcher]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _consumer: AIOKafkaConsumer | None = None

    def watch(self, topic: str, event_type: str | None, watcher: Watcher) -> None:
        """Call ``watcher(seen, value)`` for each record of ``topic`` (of ``event_type``, when
        given) read from now on — from the beginning if registered before :meth:`start`.
        Values are not kept otherwise."""
        self._watchers.append((topic, event_type, watcher))

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            enable_auto_commit=False,
            fetch_max_wait_ms=self.patience_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        partitions = await partitions_of(consumer, self.topics)
        for topic in self.topics:
            self.seen.setdefault(topic, [])
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(consumer), name="observer")

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batch = await consumer.getmany(
                    timeout_ms=max(200, self.patience_ms), max_records=5000
                )
            except KafkaError:
                await asyncio.sleep(0.5)  # the broker is away (a fault): read on when it is back
                continue
            now = time.time()
            for records in batch.values():
                for record in records:
                    self._note(record, now)

    def _note(self, record: Any, now: float) -> None:
        """Keep the note of one aiokafka ``ConsumerRecord``."""
        headers = {
            k: v.decode("utf-8", "replace")
            for k, v in record.headers or ()
            if k in KEPT_HEADERS or k.startswith(("dlq_", "x-desk-"))
        }
        value: bytes = record.value or b""
        seen = Seen(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=(record.key or b"").decode("utf-8", "replace"),
            headers=headers,
            size=len(value),
            arrived=now,
            stamped=record.timestamp / 1000,
        )
        self.seen[seen.topic].append(seen)
        for topic, event_type, watcher in self._watchers:
            if topic == seen.topic and event_type in (None, seen.type):
                watcher(seen, value)

    def records(self, topic: str) -> list[Seen]:
        return list(self.seen.get(topic, ()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()


async def partitions_of(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of ``topics``, asking the broker when the client does not know one."""
    partitions: list[TopicPartition] = []
    for topic in topics:
        numbers = consumer.partitions_for_topic(topic)
        if numbers is None:
            await consumer._client.force_metadata_update()
            numbers = consumer.partitions_for_topic(topic) or set()
        partitions += [TopicPartition(topic, n) for n in sorted(numbers)]
    return partitions


@dataclass(frozen=True)
class Group:
    """A consumer group and the physical topics it reads."""

    group_id: str
    topics: tuple[str, ...]


class ConsumerLag:
    """Records each group has still to commit: the topics' end offsets minus its committed
    offsets, summed over partitions (a partition it never committed counts from 0)."""

    def __init__(self, settings: Settings, groups: Iterable[Group]) -> None:
        self.settings = settings
        self.groups = list(groups)
        self._committed: dict[str, AIOKafkaConsumer] = {}
        self._ends: AIOKafkaConsumer | None = None

    async def _client(self, group_id: str | None) -> AIOKafkaConsumer:
        if group_id is None:
            if self._ends is None:
                self._ends = AIOKafkaConsumer(**client_options(self.settings))
                await self._ends.start()
            return self._ends
        if group_id not in self._committed:
            # A member of no group (it never subscribes): it only reads the group's offsets.
            consumer = AIOKafkaConsumer(
                **client_options(self.settings), group_id=group_id, enable_auto_commit=False
            )
            await consumer.start()
            self._committed[group_id] = consumer
        return self._committed[group_id]

    async def lag(self) -> dict[str, int]:
        """Group id -> records behind; raises ``KafkaError`` while the broker is away."""
        ends_client = await self._client(None)
        result: dict[str, int] = {}
        for group in self.groups:
            partitions = await partitions_of(ends_client, group.topics)
            ends = await ends_client.end_offsets(partitions)
            reader = await self._client(group.group_id)
            behind = 0
            for tp in partitions:
                committed = await reader.committed(tp)
                behind += max(0, ends[tp] - (committed or 0))
            result[group.group_id] = behind
        return result

    async def close(self) -> None:
        for consumer in [*self._committed.values(), *([self._ends] if self._ends else [])]:
            with contextlib.suppress(Exception):
                await consumer.stop()

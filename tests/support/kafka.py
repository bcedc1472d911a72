"""Publishing to and waiting on real Kafka topics from a test."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.deadletter import Record
from shared.kafka import client_options, ensure_topics, make_producer
from shared.settings import Settings


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


class KafkaProbe:
    """A test's window on the broker: logical topic names, the test's prefix applied."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def create(self, *topics: str) -> None:
        await ensure_topics(self.settings, [self.settings.topic(t) for t in topics])

    async def publish(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> Any:
        if self._producer is None:
            # Large enough for the poison records tests send (a value over 1 MiB).
            self._producer = make_producer(
                self.settings, client_id="test-probe", linger_ms=1, max_request_size=16 << 20
            )
            await self._producer.start()
        sent = self._producer.send_and_wait(
            self.settings.topic(topic),
            value=_bytes(value),
            key=_bytes(key) if key is not None else None,
            headers=headers or [],
            partition=partition,
        )
        # A broker that stops answering fails the test with a message instead of hanging it.
        return await asyncio.wait_for(sent, timeout=120)

    async def command(
        self, topic: str, body: dict[str, Any], *, key: str, token: str | None = None
    ) -> None:
        """Publish a command signed for its ``actor`` (or with ``token``), as a desk would."""
        from tests.support.credentials import signed

        value, headers = signed(self.settings, body, token_=token)
        await self.publish(topic, value, key=key, headers=headers)

    async def ticket_command(
        self, actor: str, number: str, kind: str, *, token: str | None = None, **fields: Any
    ) -> None:
        """``actor``'s command ``kind`` on ticket ``number`` (a fresh command id), signed for
        them (or with ``token``: one issued at a driven clock's time)."""
        body = {
            "command_id": str(uuid.uuid4()),
            "type": kind,
            "ticket_number": number,
            "actor": actor,
            **fields,
        }
        await self.command("tickets.commands", body, key=number, token=token)

    async def read(
        self,
        topic: str,
        *,
        until: Callable[[list[Record]], bool],
        timeout: float = 30.0,
    ) -> list[Record]:
        """Read the topic from its beginning until ``until(records)`` holds (or time is up)."""
        name = self.settings.topic(topic)
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            enable_auto_commit=False,
            fetch_max_wait_ms=min(self.settings.kafka_fetch_max_wait_ms, 100),
        )
        await consumer.start()
        records: list[Record] = []
        try:
            deadline = time.monotonic() + timeout
            partitions: set[int] | None = None
            while partitions is None:
                partitions = consumer.partitions_for_topic(name)
                if partitions is None:
                    await consumer._client.force_metadata_update()
                    partitions = consumer.partitions_for_topic(name)
                if partitions is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"topic {name} does not exist")
                    await asyncio.sleep(0.1)
            consumer.assign([TopicPartition(name, p) for p in sorted(partitions)])
            await consumer.seek_to_beginning()
            while not until(records):
                if time.monotonic() > deadline:
                    break
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    records.extend(Record.of(m) for m in messages)
            return records
        finally:
            await consumer.stop()

    async def records_so_far(self, topic: str, timeout: float = 60.0) -> list[Record]:
        """Everything on the topic up to its end as of now: bounded by the end offsets, so a
        topic that services keep writing to cannot keep the reader waiting for quiet."""
        name = self.settings.topic(topic)
        consumer = AIOKafkaConsumer(**client_options(self.settings), enable_auto_commit=False)
        await consumer.start()
        try:
            numbers = sorted(await _partitions(consumer, name))
            partitions = [TopicPartition(name, p) for p in numbers]
            ends = await consumer.end_offsets(partitions)
            consumer.assign(partitions)
            await consumer.seek_to_beginning()
            records: list[Record] = []
            deadline = time.monotonic() + timeout
            pending = {tp for tp in partitions if ends[tp] > 0}
            while pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: not read to its end in {timeout}s")
                batch = await consumer.getmany(*pending, timeout_ms=200)
                for tp, messages in batch.items():
                    records.extend(Record.of(m) for m in messages if m.offset < ends[tp])
                pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
            return records
        finally:
            await consumer.stop()

    async def await_records(
        self, topic: str, match: Callable[[Record], bool], count: int = 1, timeout: float = 30.0
    ) -> list[Record]:
        """Wait until ``count`` records on the topic match; fail the test if they do not come."""
        records = await self.read(
            topic, until=lambda rs: sum(1 for r in rs if match(r)) >= count, timeout=timeout
        )
        found = [r for r in records if match(r)]
        if len(found) < count:
            raise AssertionError(
                f"expected {count} matching records on {topic}, found {len(found)} "
                f"of {len(records)} after {timeout}s"
            )
        return found

    async def all_records(self, topic: str, settle: float = 1.0) -> list[Record]:
        """Everything on the topic now (reads until nothing new arrives for ``settle`` s)."""
        seen: list[int] = []
        last_change = [time.monotonic()]

        def quiet(records: list[Record]) -> bool:
            if not seen or seen[-1] != len(records):
                seen.append(len(records))
                last_change[0] = time.monotonic()
            return time.monotonic() - last_change[0] > settle

        return await self.read(topic, until=quiet, timeout=120)


async def _partitions(consumer: AIOKafkaConsumer, name: str) -> set[int]:
    found = consumer.partitions_for_topic(name)
    if found is None:
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(name)
    if found is None:
        raise TimeoutError(f"topic {name} does not exist")
    return set(found)


class _NotUtf8(str):
    """A header key that goes on the wire as bytes that are not UTF-8."""

    def encode(self, *args: object, **kwargs: object) -> bytes:
        return b"\xff\xfe"


async def publish_with_unreadable_header_key(
    settings: Settings, topic: str, value: bytes, partition: int = 0
) -> int:
    """Publish ``value`` with a header key that is not UTF-8, as any client able to write
    ``topic`` can (header keys are bytes on the wire; aiokafka's own reader then raises on
    them). Returns its offset. Built by aiokafka's pure-Python batch builder, which encodes
    keys as it is told."""
    from aiokafka.producer import message_accumulator, producer
    from aiokafka.record import default_records

    compiled = message_accumulator.DefaultRecordBatchBuilder
    plain = default_records._DefaultRecordBatchBuilderPy
    message_accumulator.DefaultRecordBatchBuilder = plain
    producer.DefaultRecordBatchBuilder = plain
    try:
        hostile = make_producer(settings, client_id="hostile", linger_ms=1)
        await hostile.start()
        try:
            sent = await hostile.send_and_wait(
                settings.topic(topic), value, partition=partition, headers=[(_NotUtf8("x"), b"1")]
            )
        finally:
            await hostile.stop()
    finally:
        message_accumulator.DefaultRecordBatchBuilder = compiled
        producer.DefaultRecordBatchBuilder = compiled
    return int(sent.offset)


async def rewind_group(
    settings: Settings, group: str, topic: str, partition: int, offset: int
) -> None:
    """Commit ``offset`` for a stopped consumer group, as a crash between a service's commit
    and its offsets' leaves it: the next start reads that record again."""
    consumer = AIOKafkaConsumer(
        **client_options(settings), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.subscribe([topic])
        while not consumer.assignment():  # the group's only member once it has joined
            await consumer.getmany(timeout_ms=100)
        await consumer.commit({TopicPartition(topic, partition): offset})
    finally:
        await consumer.stop()

"""Kafka clients built from settings, so every client of every process connects the same way.

Services talk to Kafka through a FastStream broker (:func:`make_broker`); the few places that
need a plain aiokafka client (topic administration, the operators' tools, the test harness) take
their connection options from :func:`client_options`. Topics are created explicitly
(:func:`ensure_topics`), never implicitly by a first publish: partition counts are a decision.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import BrokerResponseError, KafkaError
from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.kafka.subscriber.usecase import BatchSubscriber

from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)

# Kafka's error code for "topic already exists": creating topics is idempotent here.
_TOPIC_ALREADY_EXISTS = 36


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by every aiokafka client (bootstrap, TLS, SASL)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.require_bootstrap_servers().split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.endswith("SSL"):
        options["ssl_context"] = settings.ssl_context()
    if settings.kafka_security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value()
            if settings.kafka_sasl_password
            else None
        )
    return options


def consumer_options(settings: Settings) -> dict[str, Any]:
    """Consumer tuning that differs between the embedded broker and a production cluster."""
    return {
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
    }


def refused(error: BaseException) -> bool:
    """The broker (or the client, on its behalf) refuses the record for good: it is too large,
    the topic is not ours to write, the name is invalid... Sending it again changes nothing,
    unlike a timeout or a leader moving, which the next attempt may not meet."""
    return isinstance(error, BrokerResponseError) and not error.retriable


def record_size(
    key: bytes | None, value: bytes, headers: Iterable[tuple[str, bytes | None]]
) -> int:
    """Bytes a record takes on the wire, near enough to compare with the broker's limit."""
    framing = 64  # lengths, offsets, timestamp and attributes of one record in a batch
    extra = sum(len(k) + len(v or b"") for k, v in headers)
    return framing + len(key or b"") + len(value) + extra


def producer_acks(settings: Settings) -> int | str:
    return "all" if settings.kafka_acks == "all" else int(settings.kafka_acks)


@lru_cache(maxsize=4096)
def murmur2(key: bytes) -> int:
    """Kafka's murmur2 of a key (what the Java client partitions by), a few times faster than
    aiokafka's pure-Python loop: the relay hashes every event it publishes. The cache serves a
    stream's events published together; it is small because it holds keys (a 65,536-entry cache
    showed up as ~25 MB of resident memory that never shrank)."""
    length = len(key)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    words = length // 4
    for word in struct.unpack_from(f"<{words}I", key):
        k = (word * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length & 3
    if tail:
        base = length & ~3
        if tail >= 3:
            h ^= key[base + 2] << 16
        if tail >= 2:
            h ^= key[base + 1] << 8
        h ^= key[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """Partitioner for our producers: the Java client's choice for a key, random without one."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]


def make_producer(settings: Settings, *, client_id: str, **options: Any) -> AIOKafkaProducer:
    """A plain aiokafka producer configured like every other client of this process."""
    defaults: dict[str, Any] = {
        "acks": producer_acks(settings),
        "enable_idempotence": settings.kafka_enable_idempotence,
        "linger_ms": settings.kafka_linger_ms,
        "partitioner": partition_for,
        "max_request_size": settings.kafka_max_message_bytes,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
    }
    return AIOKafkaProducer(
        **client_options(settings), client_id=client_id, **{**defaults, **options}
    )


def make_broker(settings: Settings, *, client_id: str, description: str = "") -> KafkaBroker:
    """The FastStream broker of one service.

    Handlers receive the raw FastStream message (``apply_types=False``): decoding, validation
    and dead-lettering belong to the consumer plumbing, which must see bad bytes to route them.
    """
    return KafkaBroker(
        settings.require_bootstrap_servers().split(","),
        client_id=client_id,
        security=settings.kafka_security(),
        enable_idempotence=settings.kafka_enable_idempotence,
        acks=producer_acks(settings),
        linger_ms=settings.kafka_linger_ms,
        allow_auto_create_topics=False,
        apply_types=False,
        description=description,
        # Through our logging setup; per-message "Received/Processed" lines go to DEBUG.
        logger=logging.getLogger("faststream.broker"),
        log_level=logging.DEBUG,
        graceful_timeout=settings.shutdown_grace.total_seconds() / 2,  # batches in flight
    )


class PromptBatchSubscriber(BatchSubscriber):
    """FastStream's batch subscriber, handing records on as soon as they are there.

    FastStream 0.7 sleeps ``batch_timeout_ms`` after every empty poll, although ``getmany`` has
    already waited that long for records: whatever arrives during the sleep waits with it — up
    to 100 ms a hop at low load (the ruby-kafka #823 pattern). Here an empty poll only waits for
    what ``getmany`` did not (it returns early during a rebalance or once closed), so the loop
    never spins either.
    """

    async def get_msg(self, consumer: AIOKafkaConsumer) -> tuple[ConsumerRecord[Any, Any], ...]:
        started = time.monotonic()
        polled = await poll(
            consumer, timeout_ms=self.batch_timeout_ms, max_records=self.max_records
        )
        if polled:
            return tuple(chain.from_iterable(polled.values()))
        rest = self.batch_timeout_ms / 1000 - (time.monotonic() - started)
        if rest > 0:
            await asyncio.sleep(rest)
        return ()


@dataclass
class UnreadableRecord(ConsumerRecord[bytes, bytes]):  # type: ignore[misc]
    """Stands in for a record the Kafka client itself cannot read — aiokafka's reader raises on
    a header key that is not UTF-8, before any of this code sees the record — at its
    coordinates, with why. Consumers dead-letter it like any unreadable record; the record
    itself stays on its topic, where its coordinates find it."""

    unreadable: str = ""


async def poll(
    consumer: AIOKafkaConsumer,
    *partitions: TopicPartition,
    timeout_ms: int,
    max_records: int | None,
) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
    """``consumer.getmany``, surviving a record the client cannot read.

    aiokafka's reader raises on such a record (a header key that is not UTF-8) inside
    ``getmany``: the poll fails, its partition never moves past the record — restarts included —
    and nothing is dead-lettered; the records the same call had already drained from other
    partitions are gone from this process, their positions moved past them. Here the held
    partitions go back to their committed offsets (a group's consumer; what was processed since
    is redelivered and skipped by its claims) and are read a record at a time: a record that
    fails twice at the same position is handed on as an :class:`UnreadableRecord` and the
    consumer seeks past it. Given ``partitions`` (a reader of its own, not a group's), only
    those are read, from where they were. ``KafkaError`` (the broker away) is raised as before.
    """
    try:
        polled: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = await consumer.getmany(
            *partitions, timeout_ms=timeout_ms, max_records=max_records
        )
    except KafkaError:
        raise
    except Exception:  # what the reader raised on some record: find it, a record at a time
        return await _read_around(consumer, partitions, timeout_ms, max_records)
    return polled


async def _read_around(
    consumer: AIOKafkaConsumer,
    partitions: tuple[TopicPartition, ...],
    timeout_ms: int,
    max_records: int | None,
) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
    if len(partitions) > 1:
        raise ValueError("one partition of its own, or a group's assignment")
    if not partitions:  # the failed call may have drained others: back to what is committed
        for tp in consumer.assignment():
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
    held = set(partitions or consumer.assignment()) - consumer.paused()
    room = max_records or 500
    found: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {}
    for tp in sorted(held):
        failed_at: int | None = None
        while room > 0:
            try:
                got = await consumer.getmany(tp, timeout_ms=timeout_ms, max_records=1)
            except KafkaError:
                raise
            except Exception as error:
                at = await consumer.position(tp)
                if failed_at != at:  # once may be chance: read it once more
                    failed_at = at
                    continue
                found.setdefault(tp, []).append(_unreadable(tp, at, error))
                consumer.seek(tp, at + 1)
                room -= 1
                break
            records = got.get(tp, [])
            if not records:
                break
            found.setdefault(tp, []).extend(records)
            room -= len(records)
    return found


def _unreadable(tp: TopicPartition, offset: int, error: Exception) -> UnreadableRecord:
    why = f"the Kafka client cannot read this record: {type(error).__name__}: {error}"[:500]
    log.error("record the Kafka client cannot read; passed on as unreadable",
              topic=tp.topic, partition=tp.partition, offset=offset, error=why)  # fmt: skip
    return UnreadableRecord(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        timestamp=-1,
        timestamp_type=0,
        key=None,
        value=None,
        checksum=None,
        serialized_key_size=-1,
        serialized_value_size=-1,
        headers=[],
        unreadable=why,
    )


def prompt_batches(subscriber: object) -> None:
    """Make a subscriber of ``broker.subscriber(..., batch=True)`` a
    :class:`PromptBatchSubscriber` (FastStream builds the class itself)."""
    if type(subscriber) is not BatchSubscriber:
        raise TypeError(f"not FastStream's batch subscriber: {type(subscriber).__name__}")
    subscriber.__class__ = PromptBatchSubscriber


MARKS_SUFFIX = ".marks"
MARKS_RETENTION_MS = 3_600_000


def topic_layout(topic: str, partitions: int) -> tuple[int, dict[str, str]]:
    """Partitions and settings of a topic. A relay's marks (``shared.relay``) are one stream,
    read forward from its newest records, four a second: one partition, kept an hour, not the
    default week."""
    if topic.endswith(MARKS_SUFFIX):
        # An hour's segments, or the active one (a week by default) would keep them all.
        return 1, {"retention.ms": str(MARKS_RETENTION_MS), "segment.ms": str(MARKS_RETENTION_MS)}
    return partitions, {}


async def ensure_topics(settings: Settings, topics: Iterable[str]) -> list[str]:
    """Create the given physical topics if missing; return the ones created now."""
    wanted = sorted(set(topics))
    if not wanted:
        return []
    admin = AIOKafkaAdminClient(**client_options(settings), client_id="servicedesk-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    name=t,
                    num_partitions=topic_layout(t, settings.topic_partitions)[0],
                    replication_factor=settings.topic_replication_factor,
                    topic_configs=topic_layout(t, settings.topic_partitions)[1],
                )
                for t in missing
            ]
        )
        created = []
        for topic, code, message in _topic_errors(response):
            if code == 0:
                created.append(topic)
            elif code != _TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"cannot create topic {topic}: error {code} {message or ''}")
        await _await_metadata(admin, missing)
        return created
    finally:
        await admin.close()


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    rows = []
    for error in response.topic_errors:
        topic, code = error[0], error[1]
        message = error[2] if len(error) > 2 else None
        rows.append((topic, code, message))
    return rows


async def _await_metadata(admin: AIOKafkaAdminClient, topics: list[str]) -> None:
    """Wait until new topics show their partitions, so a producer's first send finds them."""
    for _ in range(50):
        described = await admin.describe_topics(topics)
        if all(d["error_code"] == 0 and d["partitions"] for d in described):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topics {topics} were created but never became visible")

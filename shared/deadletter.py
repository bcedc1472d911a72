"""Dead letters: messages a consumer cannot apply, parked with the reason and where they came from.

A dead letter goes to ``<topic>.dlq`` on Kafka (original key and value, original headers, plus
``dlq_*`` headers naming the reason, the error, the consumer and the original
topic/partition/offset) and into the consuming service's ``dead_letters`` table, which is what
``desk dlq list`` shows and ``desk dlq replay`` sends back to the original topic. The table is the
durable record: the embedded broker forgets its topics when it restarts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.database import Connection, identifier


class Reason:
    """Reason codes the kernel's consumers put in the ``dlq_reason`` header (a service's own
    workers may dead-letter with reasons of their own)."""

    UNDECODABLE = "undecodable"
    """Not JSON, not UTF-8, or not an envelope."""
    SCHEMA_INVALID = "schema_invalid"
    """JSON, but its data does not match the declared event or command type."""
    UNKNOWN_TYPE = "unknown_type"
    """An event type this consumer's registry does not know."""
    HANDLER_FAILED = "handler_failed"
    """The handler raised on every attempt."""
    UNAUTHENTICATED = "unauthenticated"
    """An event without a valid seal of its type's owner (missing, unknown key, mismatch)."""
    FOREIGN_SOURCE = "foreign_source"
    """An event of a type its producer does not own (its ``source`` or seal names another)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record as a consumer received it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None = None

    @classmethod
    def of(cls, raw: Any) -> Record:
        return cls(
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            key=raw.key,
            value=raw.value if raw.value is not None else b"",
            headers=tuple(raw.headers or ()),
            timestamp_ms=raw.timestamp,
        )

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return None

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    return f"{topic}{DLQ_SUFFIX}"


def dead_letter_topics(consumed: Iterable[str]) -> list[str]:
    """Where the dead letters of these topics go. A dead-letter topic has none of its own: a
    consumer of dead letters (the console counts them) must take every record as it is."""
    return [dlq_topic(t) for t in consumed if not t.endswith(DLQ_SUFFIX)]


class DeadLetters:
    """Publishes dead letters and records them in the consuming service's schema."""

    def __init__(self, producer: AIOKafkaProducer, schema: str) -> None:
        self.producer = producer
        self.schema = identifier(schema)

    async def send(
        self,
        conn: Connection,
        record: Record,
        *,
        consumer: str,
        reason: str,
        error: str,
        attempts: int,
    ) -> None:
        """Publish to ``<topic>.dlq`` (awaiting the broker), then record it in the table.

        Publishing first means a crash in between can repeat the publish, never lose it; the
        table row is unique per (consumer, topic, partition, offset).
        """
        headers = [
            *[(k, v) for k, v in record.headers if not k.startswith("dlq_")],
            ("dlq_reason", reason.encode()),
            ("dlq_error", error[:2000].encode()),
            ("dlq_consumer", consumer.encode()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
            ("dlq_attempts", str(attempts).encode()),
            ("dlq_time", datetime.now(UTC).isoformat().encode()),
        ]
        await (
            await self.producer.send(
                dlq_topic(record.topic), value=record.value, key=record.key, headers=headers
            )
        )
        await conn.execute(
            f"INSERT INTO {self.schema}.dead_letters "
            '(consumer, topic, partition, "offset", key, value, headers, reason, error, attempts) '
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            'ON CONFLICT (consumer, topic, partition, "offset") DO UPDATE '
            "SET reason = excluded.reason, error = excluded.error, attempts = excluded.attempts, "
            "recorded_at = now(), replayed_at = NULL",
            consumer,
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            [[k, v.decode("utf-8", "replace")] for k, v in record.headers],
            reason,
            error[:8000],
            attempts,
        )


@dataclass(frozen=True)
class DeadLetter:
    service: str
    id: int
    consumer: str
    topic: str
    partition: int
    offset: int
    reason: str
    error: str
    attempts: int
    recorded_at: datetime
    replayed_at: datetime | None
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str]]


async def list_dead_letters(
    conn: Connection, schema: str, *, include_replayed: bool = False
) -> list[DeadLetter]:
    schema = identifier(schema)
    exists = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.dead_letters")
    if exists is None:
        return []
    rows = await conn.fetch(
        f'SELECT id, consumer, topic, partition, "offset", reason, error, attempts, recorded_at, '
        f"replayed_at, key, value, headers FROM {schema}.dead_letters "
        f"WHERE $1 OR replayed_at IS NULL ORDER BY id",
        include_replayed,
    )
    return [
        DeadLetter(
            schema,
            r["id"],
            r["consumer"],
            r["topic"],
            r["partition"],
            r["offset"],
            r["reason"],
            r["error"],
            r["attempts"],
            r["recorded_at"],
            r["replayed_at"],
            r["key"],
            r["value"],
            [(k, v) for k, v in _headers(r["headers"])],
        )
        for r in rows
    ]


def _headers(value: Any) -> list[list[str]]:
    parsed = json.loads(value) if isinstance(value, str) else value
    return [list(pair) for pair in parsed]


async def replay_dead_letter(
    conn: Connection, producer: AIOKafkaProducer, letter: DeadLetter
) -> None:
    """Send a dead letter back to its original topic, with its original headers."""
    headers = [(k, v.encode()) for k, v in letter.headers if not k.startswith("dlq_")]
    headers.append(("dlq_replayed_from", f"{letter.service}/{letter.id}".encode()))
    await (await producer.send(letter.topic, value=letter.value, key=letter.key, headers=headers))
    await conn.execute(
        f"UPDATE {identifier(letter.service)}.dead_letters SET replayed_at = now() WHERE id = $1",
        letter.id,
    )

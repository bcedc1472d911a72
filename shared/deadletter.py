"""Dead letters: messages a consumer cannot apply, parked with the reason and where they came from.

A dead letter is first a row of the consuming service's ``dead_letters`` table, written in a
transaction of the consumer before its offsets move: that row is the durable record, what
``desk dlq list`` shows and ``desk dlq replay`` sends back to the original topic. Publishing it
to ``<topic>.dlq`` (original key and value, original headers, plus ``dlq_*`` headers naming the
reason, the error, the consumer and the original topic/partition/offset) follows, done by a
supervised task of the service and retried with backoff until the broker takes it — so a
dead-letter topic that is missing, or a broker that refuses the write, holds up no partition and
loses nothing. A copy too large for the broker is cut to fit (``dlq_truncated`` gives the
original size; the table keeps every byte); a write refused for good is left in the table,
counted by ``desk_dead_letters_unpublished``. Error texts are stored with contact data masked;
a record holding a customer's data in clear (a request, an agent's reply) is kept sealed under
their key (:data:`SEALED_FOR`), opened only to replay it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from shared.clock import Clock
from shared.database import Connection, identifier
from shared.kafka import record_size, refused
from shared.keystore import KeyStore
from shared.logging import get_logger
from shared.metrics import DEAD_LETTERS_UNPUBLISHED
from shared.personal import DataKeys, sealed_json
from shared.privacy import scrub
from shared.scheduling import backoff
from shared.settings import Settings

log = get_logger(__name__)


class Reason:
    """Reason codes the kernel's consumers put in the ``dlq_reason`` header (a service's own
    workers may dead-letter with reasons of their own)."""

    UNDECODABLE = "undecodable"
    """Not JSON, not UTF-8, nested too deep, or the decoder raised."""
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
    TOO_LARGE = "too_large"
    """Over ``kafka_max_message_bytes``: not even read."""
    PLUMBING_FAILED = "plumbing_failed"
    """The consumer plumbing itself failed on it, ``consumer_max_attempts`` times."""
    UNREADABLE = "unreadable"
    """The Kafka client itself cannot read it (a header key not UTF-8): kept by coordinates."""


@dataclass(slots=True)
class Record:
    """One Kafka record as a consumer received it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None = None
    unreadable: str | None = None
    """Why the Kafka client could not read the record this stands in for (``shared.kafka.poll``):
    only its coordinates are known."""

    @classmethod
    def of(cls, raw: Any) -> Record:
        return cls(
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            key=raw.key,
            value=raw.value if raw.value is not None else b"",
            # A null header value reads as an empty one (a header carries bytes, or nothing).
            headers=tuple((k, b"" if v is None else v) for k, v in raw.headers or ()),
            timestamp_ms=raw.timestamp,
            unreadable=getattr(raw, "unreadable", None),
        )

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return None

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


SEALED_FOR = "dlq_sealed_for"
"""Header of a dead letter whose value is sealed: the pseudonym of the customer whose personal
data the record held in clear (a request, an agent's reply). Its value is then the sealed
``{"ref", "ct"}`` of the record's bytes, opened only to replay it; once the customer is erased
it is unreadable, like every other copy of their data."""


class ErasedDeadLetter(Exception):
    """A sealed dead letter whose customer was erased: nothing of it is left to replay."""


def sealed(record: Record, ref: str, key: bytes | None) -> Record:
    """``record`` as its dead letter keeps it: its value sealed under ``ref``'s data key (none
    when the key is gone: the customer was erased, and so is their data here)."""
    value = b""
    if key is not None:
        value = json.dumps(DataKeys({ref: key}).seal_bytes(ref, record.value).as_json()).encode()
    return replace(
        record, value=value, headers=(*unsealed(record).headers, (SEALED_FOR, ref.encode()))
    )


def unsealed(record: Record) -> Record:
    """``record`` without a :data:`SEALED_FOR` header it may have come with: only the dead
    letter's writer says a value is sealed."""
    if all(k != SEALED_FOR for k, _ in record.headers):
        return record
    return replace(record, headers=tuple((k, v) for k, v in record.headers if k != SEALED_FOR))


DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    return f"{topic}{DLQ_SUFFIX}"


def dead_letter_topics(consumed: Iterable[str]) -> list[str]:
    """Where the dead letters of these topics go. A dead-letter topic has none of its own: a
    consumer of dead letters (the console counts them) must take every record as it is."""
    return [dlq_topic(t) for t in consumed if not t.endswith(DLQ_SUFFIX)]


Sealing = Callable[[list[tuple[str, bytes]], bytes], list[tuple[str, bytes]]]
"""Headers sealing a dead letter as published (its headers, its value)."""

NOT_REPUBLISHED = "a dead letter's dead letter: kept here, never published (no .dlq.dlq topic)"


class DeadLetters:
    """Records dead letters in the consuming service's schema, and publishes them afterwards."""

    BATCH = 100
    """Dead letters published per round."""
    LEASE = timedelta(minutes=1)
    """A round's claim on its rows: another instance publishes them if this one dies."""
    HEADER_ROOM = 16 * 1024
    """Headers a dead letter cut to fit keeps whole: the original record's too, up to this."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        schema: str,
        clock: Clock,
        settings: Settings,
        seal: Sealing | None = None,
    ) -> None:
        self.producer = producer
        self.seal = seal
        """What seals each dead letter as this service's (:func:`shared.provenance.seal_dead_letter`
        with its key), so a reader can tell it from a forged one; None: published unsealed."""
        self.schema = identifier(schema)
        self.service = schema
        self.clock = clock
        self.settings = settings
        self._wake = asyncio.Event()

    async def record(
        self,
        conn: Connection,
        record: Record,
        *,
        consumer: str,
        reason: str,
        error: str,
        attempts: int,
    ) -> None:
        """Write the dead letter in the caller's transaction; :meth:`wake` the publisher once it
        commits. The row is unique per (consumer, topic, partition, offset): recording the same
        record again (a redelivery) updates it, and does not publish it a second time.

        A dead letter's own dead letter (a record of a ``.dlq`` topic its reader failed on) is
        kept here and never published, as one refused for good (:data:`NOT_REPUBLISHED`): there
        is no ``.dlq.dlq`` topic to take it."""
        now = await self.clock.now(conn)
        await conn.execute(
            f"INSERT INTO {self.schema}.dead_letters "
            '(consumer, topic, partition, "offset", key, value, headers, reason, error, attempts, '
            "publish_due, publish_error) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
            'ON CONFLICT (consumer, topic, partition, "offset") DO UPDATE '
            "SET reason = excluded.reason, error = excluded.error, attempts = excluded.attempts, "
            "recorded_at = now(), replayed_at = NULL",
            consumer,
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            [[_text(k), _text((v or b"").decode("utf-8", "replace"))] for k, v in record.headers],
            reason,
            _text(scrub(error))[:8000],
            attempts,
            *((None, NOT_REPUBLISHED) if record.topic.endswith(DLQ_SUFFIX) else (now, None)),
        )

    def wake(self) -> None:
        """New dead letters were committed: publish now rather than at the next poll."""
        self._wake.set()

    async def publish_forever(self, pool: asyncpg.Pool) -> None:
        """The publishing task: a round whenever woken, and every ``relay_poll_interval``."""
        while True:
            self._wake.clear()  # before the round: a dead letter committed during it wakes the next
            if await self.publish_due(pool) < self.BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), self.settings.relay_poll_interval.total_seconds()
                    )

    async def publish_due(self, pool: asyncpg.Pool) -> int:
        """One round: publish the due unpublished dead letters; return how many were due."""
        async with pool.acquire() as conn:
            now = await self.clock.now(conn)
            rows = await conn.fetch(
                f"UPDATE {self.schema}.dead_letters SET publish_due = $2 WHERE id IN ("
                f"SELECT id FROM {self.schema}.dead_letters WHERE published_at IS NULL "
                "AND publish_due <= $1 ORDER BY publish_due, id LIMIT $3 FOR UPDATE SKIP LOCKED) "
                'RETURNING id, consumer, topic, partition, "offset", key, value, headers, reason, '
                "error, attempts, recorded_at, publish_attempts",
                now,
                now + self.LEASE,
                self.BATCH,
            )
        # No connection held while the broker answers: the lease keeps the rows ours.
        outcomes = await asyncio.gather(
            *(self._publish(row) for row in rows), return_exceptions=True
        )
        async with pool.acquire() as conn:
            now = await self.clock.now(conn)
            for row, outcome in zip(rows, outcomes, strict=True):
                await self._settle(conn, row, outcome, now)
            unpublished = await conn.fetchval(
                f"SELECT count(*) FROM {self.schema}.dead_letters WHERE published_at IS NULL"
            )
        DEAD_LETTERS_UNPUBLISHED.labels(self.service).set(unpublished)
        return len(rows)

    async def _publish(self, row: asyncpg.Record) -> None:
        original = _headers(row["headers"])
        headers = [(k, v.encode()) for k, v in original if not k.startswith("dlq_")]
        headers += [
            ("dlq_reason", row["reason"].encode()),
            ("dlq_error", row["error"][:2000].encode()),
            ("dlq_consumer", row["consumer"].encode()),
            ("dlq_topic", row["topic"].encode()),
            ("dlq_partition", str(row["partition"]).encode()),
            ("dlq_offset", str(row["offset"]).encode()),
            ("dlq_attempts", str(row["attempts"]).encode()),
            ("dlq_time", row["recorded_at"].isoformat().encode()),
            *((k, v.encode()) for k, v in original if k == SEALED_FOR),  # the writer's own
        ]
        key, value = row["key"], bytes(row["value"])
        limit = self.settings.kafka_max_message_bytes
        if record_size(key, value, headers) > limit:
            # Cut to fit: the dlq_* headers, the original ones unless they are large themselves
            # (they say where a record came from), and the start of the value; the table has it
            # all.
            size = len(value)
            if record_size(None, b"", headers) > self.HEADER_ROOM:
                headers = [(k, v) for k, v in headers if k.startswith("dlq_")]
            headers.append(("dlq_truncated", str(size).encode()))
            key = key[:1024] if key else key
            value = value[: max(0, limit - record_size(key, b"", headers) - 1024)]
        if self.seal is not None:
            headers += self.seal(headers, value)
        await (await self.producer.send(dlq_topic(row["topic"]), value, key, headers=headers))

    async def _settle(
        self, conn: Connection, row: asyncpg.Record, outcome: BaseException | None, now: datetime
    ) -> None:
        if outcome is None:
            await conn.execute(
                f"UPDATE {self.schema}.dead_letters SET published_at = $2, publish_due = NULL, "
                "publish_error = NULL WHERE id = $1",
                row["id"],
                now,
            )
            return
        attempts = row["publish_attempts"] + 1
        settings = self.settings
        due = None
        if not refused(outcome):
            pause = backoff(
                attempts, settings.consumer_retry_backoff, settings.consumer_retry_backoff_max
            )
            due = now + pause
        error = f"{type(outcome).__name__}: {outcome}"
        log.error(
            "dead letter not published" + ("; retrying later" if due else "; refused for good"),
            dlq=dlq_topic(row["topic"]),
            dead_letter=row["id"],
            attempts=attempts,
            retry_at=due.isoformat() if due else None,
            error=error,
        )
        await conn.execute(
            f"UPDATE {self.schema}.dead_letters SET publish_attempts = $2, publish_due = $3, "
            "publish_error = $4 WHERE id = $1",
            row["id"],
            attempts,
            due,
            _text(error)[:2000],
        )


def _text(value: str) -> str:
    """Text PostgreSQL stores: no NUL (which ``text`` and ``jsonb`` refuse)."""
    return value.replace("\x00", "\ufffd")


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
    return await _letters(conn, schema, "$1 OR replayed_at IS NULL", include_replayed)


async def sealed_for(conn: Connection, schema: str, ref: str) -> list[DeadLetter]:
    """The dead letters of ``schema`` sealed under the customer ``ref`` (:data:`SEALED_FOR`),
    replayed or not: what the customer's right of access covers there."""
    return await _letters(conn, schema, "headers @> $1::jsonb", [[SEALED_FOR, ref]])


async def _letters(conn: Connection, schema: str, where: str, arg: Any) -> list[DeadLetter]:
    """``schema``'s dead letters matching ``where`` (one parameter), oldest first; none when the
    schema has no such table."""
    schema = identifier(schema)
    exists = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.dead_letters")
    if exists is None:
        return []
    rows = await conn.fetch(
        f'SELECT id, consumer, topic, partition, "offset", reason, error, attempts, recorded_at, '
        f"replayed_at, key, value, headers FROM {schema}.dead_letters WHERE {where} ORDER BY id",
        arg,
    )
    return [_letter(schema, r) for r in rows]


def _letter(schema: str, r: Any) -> DeadLetter:
    return DeadLetter(
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


def _headers(value: Any) -> list[list[str]]:
    parsed = json.loads(value) if isinstance(value, str) else value
    return [list(pair) for pair in parsed]


async def replay_dead_letter(
    conn: Connection, producer: AIOKafkaProducer, letter: DeadLetter, keys: KeyStore | None = None
) -> None:
    """Send a dead letter back to its original topic, with its original headers (a sealed one
    opened with ``keys``; :class:`ErasedDeadLetter` when its customer was erased)."""
    value = await original_value(conn, letter, keys)
    headers = [(k, v.encode()) for k, v in letter.headers if not k.startswith("dlq_")]
    headers.append(("dlq_replayed_from", f"{letter.service}/{letter.id}".encode()))
    await (await producer.send(letter.topic, value=value, key=letter.key, headers=headers))
    await conn.execute(
        f"UPDATE {identifier(letter.service)}.dead_letters SET replayed_at = now() WHERE id = $1",
        letter.id,
    )


async def original_value(conn: Connection, letter: DeadLetter, keys: KeyStore | None) -> bytes:
    """The bytes the dead letter's record came with: a sealed one opened with its customer's key."""
    ref = next((v for k, v in letter.headers if k == SEALED_FOR), None)
    if ref is None:
        return letter.value
    if keys is None:
        raise ValueError(f"{letter.service}/{letter.id} is sealed: opening it needs the key store")
    found = (await keys.keys(conn, [ref])).get(ref)
    try:
        document = json.loads(letter.value) if letter.value else None
    except ValueError:
        document = None
    seal = sealed_json(document) if isinstance(document, dict) else None
    clear = DataKeys({ref: found}).open_bytes(seal) if seal is not None else None
    if clear is None:
        raise ErasedDeadLetter(f"its customer {ref} was erased")
    return clear

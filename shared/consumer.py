"""Exactly-once effects over at-least-once delivery: the consumer plumbing of every service.

A :class:`Subscription` says what a consumer reads and how it handles a batch; the
:class:`ConsumerRunner` does the rest, the same way for all four services:

1. **Decode** each record. Whatever its bytes, size or depth, a record that is not a valid
   message never rewinds anything: the topic's contract answers it (a rejection) or it is
   dead-lettered at once — over ``kafka_max_message_bytes`` it is not even read, and a decoder
   that raises (``RecursionError``, a bug) counts as a record that cannot be read. An event not
   published by its type's owner (:mod:`shared.provenance`) is dead-lettered too.
2. **Apply** the whole poll in one transaction: claim every message id in
   ``processed_messages`` (a redelivered message is already there and is skipped), run the
   handler on the new ones, append the events it recorded, feed the inline projections, commit.
3. **Then** commit the Kafka offsets (after every batch, or once an interval for all the
   batches in it: :mod:`shared.offsets`). A crash between 2 and 3 means redelivery, and
   redelivery finds the ids claimed: no second effect. Offsets are never committed first.

When the batch fails, it is rolled back and replayed message by message to find the culprit.
A failing message is retried with exponential backoff by pausing *its partition only* and
seeking back to it, so other partitions keep flowing; after ``consumer_max_attempts`` it is
dead-lettered and its partition moves on. When the database itself is unreachable nothing can
be applied anywhere, so the whole batch waits and retries without counting attempts. A fault of
this plumbing itself (neither a message's nor the infrastructure's) is retried
``consumer_max_attempts`` times; then each record it still hits is dead-lettered as
``plumbing_failed`` and the partition moves on.

A handler may :meth:`Inbound.release` a message it refused without effect: its claim is dropped
in the same transaction, so the same message sent again is evaluated anew. The *record* stays
answered (a claim of its coordinates, or of what :meth:`Subscription.answered_key` names):
redelivered after a crash between 2 and 3, it is skipped, not refused a second time — or, the
state having moved on, applied after its refusal was told.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import asyncpg
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, KafkaError
from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from shared.database import Connection
from shared.deadletter import Reason, Record, dlq_topic, sealed, unsealed
from shared.events import (
    EVENTS,
    Envelope,
    EventData,
    EventDecodeError,
    EventRegistry,
    UnknownEventType,
    describe_invalid,
)
from shared.faults import crash_point
from shared.kafka import consumer_options, prompt_batches, record_size
from shared.logging import get_logger, ticket_context
from shared.metrics import (
    BATCH_SECONDS,
    CONSUMER_LAG,
    MESSAGES_DEAD_LETTERED,
    MESSAGES_DUPLICATE,
    MESSAGES_HANDLED,
    MESSAGES_RETRIED,
)
from shared.offsets import PendingOffsets
from shared.provenance import Forged
from shared.scheduling import backoff
from shared.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from faststream.kafka import KafkaBroker

    from shared.service import Service

log = get_logger(__name__)
T = TypeVar("T")

# The database or the network is down: retrying elsewhere would not help, waiting does.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.TooManyConnectionsError,
    KafkaError,
)


class Rejected(Exception):
    """A record that can never be applied, whatever the retries: dead-letter it at once."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def released_key(record: Record) -> str:
    """The claim a released message leaves for its record: a redelivery of the record (same
    coordinates) is skipped; the message sent again (a new offset) is evaluated anew."""
    return f"released:{record.coordinates}"


@dataclass(slots=True)
class Inbound(Generic[T]):
    """A decoded message with its record and the id it is de-duplicated by."""

    record: Record
    message: T
    message_id: str
    released: bool = False

    def release(self) -> None:
        """Refused without effect: forget its id, so that the same message sent again is
        evaluated anew (dispatch's refused commands) instead of skipped as a repeat; this record
        itself, redelivered, is still skipped (:func:`released_key`)."""
        self.released = True


@dataclass(frozen=True, slots=True)
class _Unread:
    """A record no message could be made of, and why."""

    record: Record
    reason: str
    detail: str


class Subscription(ABC, Generic[T]):
    """What a consumer reads, how it decodes a record, and what it does with a batch."""

    name: str
    """Consumer name; with the service it forms the consumer group and the tracking key."""
    topics: tuple[str, ...]
    """Logical topic names (the settings' prefix is applied)."""
    description: str = ""
    payload: Any = None
    """Type of one decoded message, shown in the AsyncAPI document."""
    written_by: str = "clients"
    """Who writes these topics when no service publishes them (the Kafka ACLs): ``clients``
    (channel adapters, agent desks) or ``operator`` (the ``desk`` tools)."""
    patience_ms: int = 0
    """How long a fetch may wait for records at the least (``kafka_fetch_max_wait_ms`` when it
    is longer): topics whose records may wait (dead letters) are polled less often. The
    embedded broker's CPU grows with every partition polled, whatever the traffic."""

    @abstractmethod
    def decode(self, record: Record) -> T:
        """Turn a record into a message, or raise :class:`Rejected` (anything else it raises
        counts as ``undecodable``)."""

    def unreadable(self, record: Record, reason: str, detail: str) -> T | None:
        """The answer this topic's contract gives a record that cannot be read (intake's
        rejections, dispatch's ``invalid_command``), handled like any message; None — the
        default — dead-letters it."""
        return None

    @abstractmethod
    def message_id(self, message: T, record: Record) -> str:
        """The id a redelivery of this message will carry again."""

    @abstractmethod
    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[T]]) -> None:
        """Apply new (never seen) messages, in order; record events on ``uow``."""

    def wants(self, message: T) -> bool:
        """False for messages this consumer reads past without applying (never claimed)."""
        return True

    def answered_key(self, message: T, record: Record) -> str:
        """What a released message leaves claimed (:meth:`Inbound.release`) beside its record's
        coordinates, so the record redelivered is skipped and the message sent again (a new
        offset) is evaluated anew: by default nothing more. dispatch names a signed command's
        exact signed bytes, so a copy of a refused command at a new offset is no second try."""
        return released_key(record)

    async def owner(self, conn: Connection, record: Record) -> str | None:
        """The pseudonym of the customer whose personal data ``record`` holds in clear (a
        request, an agent's reply about them): its dead letter, if it comes to one, is sealed
        under their key. The default — None — keeps a dead letter as it came: events carry
        their personal fields sealed already."""
        return None

    def passes(self, record: Record) -> bool:
        """True for a record this consumer reads past without even decoding it (its headers
        say it is of no interest); the default decodes every record."""
        return False

    def log_context(self, message: T) -> dict[str, object]:
        """Ticket id / number / event id / correlation id of a message, for log lines."""
        return {}


@dataclass(slots=True)
class Delivered:
    """An event from another service (or this one), with its envelope and typed data."""

    envelope: Envelope
    data: EventData


class EventSubscription(Subscription[Delivered]):
    """A subscription to CloudEvents envelopes, decoded through the event registry."""

    registry: EventRegistry = EVENTS
    accepts: tuple[str, ...] = ()
    """Event names (without version) this consumer handles; others are skipped, not failed.
    Empty means every type the registry knows."""

    def decode(self, record: Record) -> Delivered:
        try:
            envelope = Envelope.model_validate_json(record.value)
        except ValidationError as error:
            reason = (
                Reason.UNDECODABLE
                if any(e["type"] == "json_invalid" for e in error.errors())
                else Reason.SCHEMA_INVALID
            )
            raise Rejected(reason, describe_invalid(error)) from None
        if self.accepts and not self._accepted(envelope.type) and self._known(envelope.type):
            return Delivered(envelope, _IGNORED)
        try:
            data = self.registry.decode(envelope.type, envelope.data)
        except UnknownEventType as error:
            raise Rejected(Reason.UNKNOWN_TYPE, str(error)) from None
        except EventDecodeError as error:
            raise Rejected(Reason.SCHEMA_INVALID, str(error)) from None
        return Delivered(envelope, data)

    def passes(self, record: Record) -> bool:
        """A known event type this consumer does not handle, by its ``ce_type`` header: most
        events on a topic are someone else's (sla's clocks, for notify and dispatch), and
        parsing their envelopes only to skip them was a tenth of a consumer's CPU. A record
        without the header is decoded. The relay writes header and envelope from one row; a
        record whose header names another type than its envelope is a forgery, skipped without
        effect."""
        if not self.accepts:
            return False
        event_type = record.header("ce_type")
        return event_type is not None and not self._accepted(event_type) and self._known(event_type)

    def _accepted(self, event_type: str) -> bool:
        return event_type.rsplit(".v", 1)[0] in self.accepts

    def _known(self, event_type: str) -> bool:
        """A type of the registry (another consumer's, skipped here); unknown ones are dead
        letters."""
        return self.registry.knows(event_type.rsplit(".v", 1)[0])

    def message_id(self, message: Delivered, record: Record) -> str:
        return str(message.envelope.id)

    def log_context(self, message: Delivered) -> dict[str, object]:
        return {
            "ticket_id": message.envelope.subject,
            "event_id": message.envelope.id,
            "correlation_id": message.envelope.correlationid,
        }

    def wants(self, message: Delivered) -> bool:
        return not isinstance(message.data, _Ignored)


class _Ignored(EventData):
    """Placeholder data of an event type this consumer does not handle."""


_IGNORED = _Ignored()


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """One consumer's view of the group: joined yet (readiness), what it holds, how many
    rebalances it went through; forgets the backoffs of partitions taken away."""

    def __init__(self, runner: ConsumerRunner[Any]) -> None:
        self.runner = runner
        self.joined = False
        self.assigned: set[TopicPartition] = set()
        self.rebalances = 0

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.runner.commit_pending(revoked)
        for tp in revoked:
            self.runner.forget_partition(tp)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.joined = True
        self.assigned = set(assigned)
        self.rebalances += 1


class ConsumerRunner(Generic[T]):
    """Runs one subscription inside a service, with the guarantees in the module docstring."""

    def __init__(self, subscription: Subscription[T], service: Service) -> None:
        self.subscription = subscription
        self.service = service
        self.settings = service.settings
        self.name = f"{service.name}.{subscription.name}"
        self._members: list[tuple[Any, _Assignment]] = []
        self._attempts: dict[tuple[str, int, int], int] = {}
        self._plumbing: dict[tuple[str, int, int], int] = {}
        self._resume_tasks: dict[TopicPartition, asyncio.Task[None]] = {}
        self._labels = (service.name, subscription.name)
        self._lag: dict[TopicPartition, int] = {}
        self._offsets: dict[int, PendingOffsets] = {}
        """Per consumer (by identity): the offsets processed and not yet committed."""

    @property
    def joined(self) -> bool:
        """Every consumer of this subscription has joined the group (``/ready``)."""
        return bool(self._members) and all(a.joined for _, a in self._members)

    @property
    def assigned(self) -> set[TopicPartition]:
        return set().union(*self.assignments)

    @property
    def assignments(self) -> list[set[TopicPartition]]:
        """The partitions each of this process's consumers holds."""
        return [a.assigned for _, a in self._members]

    @property
    def rebalances(self) -> int:
        return sum(a.rebalances for _, a in self._members)

    @property
    def topics(self) -> list[str]:
        return [self.settings.topic(t) for t in self.subscription.topics]

    @property
    def group_id(self) -> str:
        return self.settings.topic(self.name)

    def register(self, broker: KafkaBroker) -> None:
        """Declare the FastStream subscribers: batches, manual commits, raw records.

        ``consumer_concurrency`` consumers join the group from this process, each with its own
        partitions and its own loop, so one batch's Python work overlaps another's database
        work. Per partition, order is kept: a partition belongs to one consumer at a time.
        """

        async def on_batch(body: Any) -> None:
            # In a context of its own. FastStream's context holds the message being handled,
            # and through it the whole poll; every timer and task made while handling keeps a
            # copy of the context it was made in — asyncpg's idle-connection timer for five
            # minutes after each release, a cancelled one until the loop sweeps it — so polls
            # handled long ago stayed in memory: 13,000 records in the console by 90,000
            # tickets, most of its growth (bench.e2e --soak).
            await asyncio.create_task(self.on_batch(body), context=contextvars.Context())

        # Read by FastStream for the AsyncAPI document only (apply_types=False): the payload of
        # one message on the wire, though the handler receives a whole poll.
        on_batch.__annotations__ = {"body": self.subscription.payload or Any, "return": None}
        for n in range(self.settings.consumer_concurrency):
            listener = _Assignment(self)
            subscriber = broker.subscriber(
                *self.topics,
                group_id=self.group_id,
                batch=True,
                max_records=self.settings.consumer_batch_size,
                batch_timeout_ms=100,
                ack_policy=AckPolicy.MANUAL,
                parser=_tolerant,
                decoder=_raw,
                auto_offset_reset="earliest",
                listener=listener,
                title=f"{self.name}:consume" if n == 0 else f"{self.name}:consume:{n}",
                description=self.subscription.description,
                include_in_schema=n == 0,
                **self._consumer_options(),
            )
            prompt_batches(subscriber)
            subscriber(on_batch)
            self._members.append((subscriber, listener))

    def _consumer_options(self) -> dict[str, Any]:
        options = consumer_options(self.settings)
        wait = max(options["fetch_max_wait_ms"], self.subscription.patience_ms)
        return {**options, "fetch_max_wait_ms": wait}

    # --- the batch path -------------------------------------------------------------------

    async def on_batch(self, poll: Poll) -> None:
        """FastStream calls this with one poll (records of several partitions)."""
        consumer = poll.consumer
        records = [Record.of(r) for r in poll.records]
        if not records:
            return
        started = time.perf_counter()
        try:
            try:
                positions = await self._process(consumer, records)
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as error:  # a fault of this plumbing, not of a message
                found = await self._plumbing_failed(consumer, records, error)
                if found is None:
                    return
                positions = found
        except INFRASTRUCTURE_ERRORS as error:
            await self._wait_and_rewind(consumer, records, error)
            return
        except Exception as error:
            # Even settling record by record failed: nothing is safe but to keep the batch.
            log.critical("consumer plumbing failed; rewinding the batch", consumer=self.name)
            await self._wait_and_rewind(consumer, records, error)
            return
        for record in records:
            self._plumbing.pop(self._key(record), None)
        BATCH_SECONDS.labels(*self._labels).observe(time.perf_counter() - started)
        crash_point("consumer.after_transaction")
        await self._commit(consumer, positions)

    async def _process(self, consumer: Any, records: Sequence[Record]) -> dict[TopicPartition, int]:
        """Decode and apply the records; return the offsets to commit."""
        entries = await self._decode(records)
        wanted = [e for e in entries if isinstance(e, Inbound)]
        if any(self._key(m.record) in self._attempts for m in wanted):
            # A message that failed before is back: try it alone, not the batch again.
            return await self._apply_one_by_one(consumer, entries, batch_failed=False)
        try:
            await self._apply(wanted)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as error:  # a poison message somewhere in the batch
            log.warning(
                "batch failed, isolating the failing message",
                consumer=self.name,
                records=len(records),
                error=repr(error),
            )
            return await self._apply_one_by_one(consumer, entries, batch_failed=True)
        return _next_offsets(records)

    async def _decode(self, records: Sequence[Record]) -> list[Inbound[T] | Record]:
        """Decode each record; dead-letter the unreadable ones now (they never get better).

        Returns, in order, the messages to apply and the records that need nothing more
        (dead-lettered, or of no interest to this consumer).
        """
        entries: list[Inbound[T] | Record] = []
        unread: list[_Unread] = []
        for record in records:
            entry = self._read(record)
            if isinstance(entry, _Unread):
                unread.append(entry)
            entries.append(entry if isinstance(entry, Inbound) else record)
        if unread:
            async with self.service.pool.acquire() as conn, conn.transaction():
                for entry in unread:
                    await self._dead_letter(conn, entry.record, entry.reason, entry.detail, 1)
            self.service.dead_letters.wake()
        return entries

    def _read(self, record: Record) -> Inbound[T] | _Unread | None:
        """One record as a message to apply, as unreadable, or None when this consumer reads
        past it. Never raises: whatever the record, it has an answer."""
        subscription = self.subscription
        limit = self.settings.kafka_max_message_bytes
        try:
            if record.unreadable is not None:
                raise Rejected(Reason.UNREADABLE, record.unreadable)
            size = record_size(record.key, record.value, record.headers)
            if size > limit:
                raise Rejected(Reason.TOO_LARGE, f"{size} bytes; at most {limit}")
            if subscription.passes(record):
                return None
            message = subscription.decode(record)
            if not subscription.wants(message):
                return None
            if isinstance(message, Delivered):
                self.service.provenance.check(record, message.envelope)
            return Inbound(record, message, subscription.message_id(message, record))
        except Forged as forged:  # another's event: no contract answers it
            return _Unread(record, forged.reason, str(forged))
        except Rejected as error:
            reason, detail = error.reason, str(error)
        except Exception as error:  # RecursionError, MemoryError, a decoder's own bug
            reason, detail = Reason.UNDECODABLE, f"{type(error).__name__}: {error}"
        try:
            answer = subscription.unreadable(record, reason, detail)
            if answer is not None:
                return Inbound(record, answer, subscription.message_id(answer, record))
        except Exception as error:
            detail = f"{detail}; and answering it failed: {type(error).__name__}: {error}"
        return _Unread(record, reason, detail[:2000])

    async def _apply(self, messages: Sequence[Inbound[T]]) -> None:
        """One transaction: claim the ids, run the handler, append its events, project them."""
        if not messages:
            return
        service = self.service
        uow: UnitOfWork | None = None
        async with service.pool.acquire() as conn, conn.transaction():
            fresh, now = await self._claim(conn, messages)
            if now is not None:  # some are fresh
                for message in fresh:  # a refusal in an earlier, rolled-back try is not this one
                    message.released = False
                uow = UnitOfWork(conn, service.store, now, service.projections)
                await self.subscription.handle(uow, fresh)
                await uow.flush()
                await self._release(conn, [m for m in fresh if m.released])
        if uow is not None:
            uow.committed()

    async def _claim(
        self, conn: Connection, messages: Sequence[Inbound[T]]
    ) -> tuple[list[Inbound[T]], datetime | None]:
        """Record every id as processed, stamped with the service's clock (which the purge of
        old ids reads too); return the messages seen for the first time and that now, read in
        the same statement (a batch of one message is the steady case: a round trip saved is a
        tenth of its cost); None when none is fresh."""
        unique: dict[str, Inbound[T]] = {}
        for m in messages:
            unique.setdefault(m.message_id, m)
        claimed = await conn.fetch(
            f"WITH clock AS MATERIALIZED (SELECT {self.service.clock.expression} AS now), "
            "answered AS (SELECT message_id FROM processed_messages "
            "WHERE consumer = $1 AND message_id = ANY($3::text[] || $4::text[])) "
            "INSERT INTO processed_messages (consumer, message_id, processed_at) "
            "SELECT $1, m.id, (SELECT now FROM clock) FROM unnest($2::text[], $3::text[], "
            "$4::text[]) AS m(id, released, answered) "
            "WHERE m.released NOT IN (SELECT message_id FROM answered) "
            "AND m.answered NOT IN (SELECT message_id FROM answered) "
            "ON CONFLICT DO NOTHING RETURNING message_id, processed_at",
            self.name,
            list(unique),
            [released_key(m.record) for m in unique.values()],
            [self.subscription.answered_key(m.message, m.record) for m in unique.values()],
        )
        now: datetime | None = claimed[0][1] if claimed else None
        new_ids = {r[0] for r in claimed}
        fresh = [m for m in unique.values() if m.message_id in new_ids]
        if len(fresh) < len(messages):
            MESSAGES_DUPLICATE.labels(*self._labels).inc(len(messages) - len(fresh))
        MESSAGES_HANDLED.labels(*self._labels).inc(len(fresh))
        return fresh, now

    async def _release(self, conn: Connection, released: list[Inbound[T]]) -> None:
        """Forget the released messages' ids; claim their records' coordinates instead, and
        what :meth:`Subscription.answered_key` names when that is more (a record answered
        before it named more is still skipped by its coordinates)."""
        if released:
            answered = {released_key(m.record) for m in released}
            answered |= {self.subscription.answered_key(m.message, m.record) for m in released}
            await conn.execute(
                "WITH forgotten AS (DELETE FROM processed_messages "
                "WHERE consumer = $1 AND message_id = ANY($2::text[])) "
                "INSERT INTO processed_messages (consumer, message_id, processed_at) "
                f"SELECT $1, unnest($3::text[]), {self.service.clock.expression} "
                "ON CONFLICT DO NOTHING",
                self.name,
                [m.message_id for m in released],
                sorted(answered),
            )

    # --- isolating a poison message -------------------------------------------------------

    async def _apply_one_by_one(
        self, consumer: Any, entries: Sequence[Inbound[T] | Record], *, batch_failed: bool
    ) -> dict[TopicPartition, int]:
        """Replay the batch message by message; pause a partition at its failing message."""
        by_partition: dict[TopicPartition, list[Inbound[T] | Record]] = {}
        for entry in entries:
            record = entry.record if isinstance(entry, Inbound) else entry
            by_partition.setdefault(TopicPartition(record.topic, record.partition), []).append(
                entry
            )
        positions: dict[TopicPartition, int] = {}
        # A failed batch attempt counts against the first message that then fails on its own.
        uncharged = [batch_failed]
        for tp, in_partition in by_partition.items():
            for entry in in_partition:
                if isinstance(entry, Inbound) and not await self._apply_single(
                    consumer, tp, entry, uncharged
                ):
                    break
                record = entry.record if isinstance(entry, Inbound) else entry
                positions[tp] = record.offset + 1
        return positions

    async def _apply_single(
        self, consumer: Any, tp: TopicPartition, item: Inbound[T], uncharged: list[bool]
    ) -> bool:
        """Apply one message; on failure schedule a retry or dead-letter it. True if settled."""
        key = self._key(item.record)
        with ticket_context(**self._log_context(item.message)):
            try:
                await self._apply([item])
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as error:
                attempts = self._attempts.get(key, 0) + 1
                if uncharged[0]:
                    attempts += 1
                    uncharged[0] = False
                self._attempts[key] = attempts
                if attempts < self.settings.consumer_max_attempts:
                    delay = self._backoff(attempts)
                    MESSAGES_RETRIED.labels(*self._labels).inc()
                    log.warning(
                        "message failed, retrying its partition later",
                        consumer=self.name,
                        record=item.record.coordinates,
                        attempt=attempts,
                        retry_in_s=round(delay, 3),
                        error=repr(error),
                    )
                    self._pause(consumer, tp, item.record.offset, delay)
                    return False
                async with self.service.pool.acquire() as conn, conn.transaction():
                    await self._dead_letter(
                        conn, item.record, Reason.HANDLER_FAILED, repr(error), attempts
                    )
                self.service.dead_letters.wake()
        self._attempts.pop(key, None)
        return True

    def _log_context(self, message: T) -> dict[str, object]:
        try:
            return self.subscription.log_context(message)
        except Exception:  # a log line's context is never worth a failed message
            return {}

    # --- when the plumbing itself fails ---------------------------------------------------

    async def _plumbing_failed(
        self, consumer: Any, records: Sequence[Record], error: Exception
    ) -> dict[TopicPartition, int] | None:
        """Rewind and retry after a backoff, ``consumer_max_attempts`` times at most; then settle
        the records one at a time, dead-lettering as ``plumbing_failed`` any the fault still
        hits. Returns the offsets to commit, or None after a rewind."""
        keys = [self._key(r) for r in records]
        attempts = 1 + max(self._plumbing.get(k, 0) for k in keys)
        for k in keys:
            self._plumbing[k] = attempts
        if attempts < self.settings.consumer_max_attempts:
            log.exception(
                "consumer plumbing failed; rewinding the batch",
                consumer=self.name,
                attempt=attempts,
            )
            delay = self._backoff(attempts)
            await self._wait_and_rewind(consumer, records, error, delay=delay, quiet=True)
            return None
        log.error(
            "consumer plumbing failed again; settling the batch record by record",
            consumer=self.name,
            attempts=attempts,
            error=repr(error),
        )
        positions: dict[TopicPartition, int] = {}
        held: set[TopicPartition] = set()
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            if tp in held:
                continue
            try:
                settled = await self._process(consumer, [record])
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as fault:
                async with self.service.pool.acquire() as conn, conn.transaction():
                    await self._dead_letter(
                        conn, record, Reason.PLUMBING_FAILED, repr(fault), attempts
                    )
                self.service.dead_letters.wake()
                settled = {tp: record.offset + 1}
            self._plumbing.pop(self._key(record), None)
            if tp in settled:
                positions[tp] = settled[tp]
            else:
                held.add(tp)  # paused for a retry: the rest of it comes again
        return positions

    @staticmethod
    def _key(record: Record) -> tuple[str, int, int]:
        return (record.topic, record.partition, record.offset)

    def _backoff(self, attempts: int) -> float:
        settings = self.settings
        delay = backoff(
            attempts, settings.consumer_retry_backoff, settings.consumer_retry_backoff_max
        )
        return delay.total_seconds()

    def _pause(self, consumer: Any, tp: TopicPartition, offset: int, delay: float) -> None:
        consumer.seek(tp, offset)
        consumer.pause(tp)

        async def resume() -> None:
            await asyncio.sleep(delay)
            self._resume_tasks.pop(tp, None)
            with contextlib.suppress(IllegalStateError):
                if tp in consumer.assignment():
                    consumer.resume(tp)

        previous = self._resume_tasks.pop(tp, None)
        if previous:
            previous.cancel()
        self._resume_tasks[tp] = asyncio.create_task(resume(), name=f"resume {tp}")

    def forget_partition(self, tp: TopicPartition) -> None:
        task = self._resume_tasks.pop(tp, None)
        if task:
            task.cancel()
        for known in (self._attempts, self._plumbing):
            for key in [k for k in known if (k[0], k[1]) == (tp.topic, tp.partition)]:
                del known[key]
        self._lag.pop(tp, None)

    async def _dead_letter(
        self, conn: Connection, record: Record, reason: str, error: str, attempts: int
    ) -> None:
        MESSAGES_DEAD_LETTERED.labels(*self._labels, reason).inc()
        log.error(
            "message dead-lettered",
            consumer=self.name,
            record=record.coordinates,
            dlq=dlq_topic(record.topic),
            reason=reason,
            error=error[:500],
            attempts=attempts,
        )
        await self.service.dead_letters.record(
            conn,
            await self._sealed(conn, record),
            consumer=self.name,
            reason=reason,
            error=error,
            attempts=attempts,
        )

    async def _sealed(self, conn: Connection, record: Record) -> Record:
        """The record as its dead letter keeps it: sealed under the customer whose personal
        data it holds in clear (:meth:`Subscription.owner`), else as it came. Finding them
        must not keep the dead letter from being written: a failure there is logged, and the
        record kept as it came (in the service's own table and dead-letter topic)."""
        record, keys = unsealed(record), self.service.key_store
        if keys is None:
            return record
        try:
            async with conn.transaction():  # a savepoint: a failed look-up leaves it writable
                ref = await self.subscription.owner(conn, record)
                key = (await keys.keys(conn, [ref])).get(ref) if ref is not None else None
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as error:
            log.error(
                "dead letter kept unsealed: finding whose data it holds failed",
                consumer=self.name,
                record=record.coordinates,
                error=repr(error)[:300],
            )
            return record
        return record if ref is None else sealed(record, ref, key)

    # --- when nothing can be applied ------------------------------------------------------

    async def _wait_and_rewind(
        self,
        consumer: Any,
        records: Sequence[Record],
        error: BaseException,
        *,
        delay: float | None = None,
        quiet: bool = False,
    ) -> None:
        """Nothing of the batch can be applied now (the database or broker is unreachable, or
        the plumbing failed): rewind it and wait before retrying."""
        if not quiet:
            log.error(
                "cannot apply batch, infrastructure unavailable; will retry",
                consumer=self.name,
                error=repr(error),
            )
        for tp, offset in _first_offsets(records).items():
            # Revoked meanwhile? Then the new owner starts from the committed offset.
            with contextlib.suppress(IllegalStateError):
                consumer.seek(tp, offset)
        if delay is None:
            delay = self.settings.consumer_retry_backoff_max.total_seconds() / 10
        await asyncio.sleep(delay)

    async def _commit(self, consumer: Any, positions: dict[TopicPartition, int]) -> None:
        """The batch's transaction committed: its offsets go with the next commit
        (:mod:`shared.offsets`)."""
        if not positions:
            return
        offsets = self._offsets.get(id(consumer))
        if offsets is None:
            interval = self.settings.consumer_commit_interval.total_seconds()
            offsets = PendingOffsets(consumer, interval, self._committed, self.name)
            self._offsets[id(consumer)] = offsets
        await offsets.processed(positions)

    def _committed(self, consumer: Any, positions: dict[TopicPartition, int]) -> None:
        for tp, offset in positions.items():
            high = consumer.highwater(tp)
            if high is not None:
                self._lag[tp] = max(0, high - offset)
        CONSUMER_LAG.labels(*self._labels).set(sum(self._lag.values()))

    async def commit_pending(self, partitions: Collection[TopicPartition] | None = None) -> None:
        """Commit the processed offsets not yet committed (of ``partitions``, when given): before
        a rebalance takes them away, or a stop."""
        for offsets in list(self._offsets.values()):
            try:
                await offsets.commit_now(partitions)
            except Exception as error:  # redelivered to the next owner, skipped by its claims
                log.warning("offset commit failed", consumer=self.name, error=repr(error))
            if partitions is not None:
                offsets.forget(partitions)

    async def stop(self) -> None:
        """Leave the group one consumer at a time, each time letting the others take over.

        A rolling stop: no partition sits unowned while the group settles, and the embedded
        broker (which wedges a group when a member leaves mid-rebalance) stays healthy.
        """
        for task in self._resume_tasks.values():
            task.cancel()
        self._resume_tasks.clear()
        await self.commit_pending()
        members = [(s, a) for s, a in self._members if a.joined]
        while len(members) > 1:
            subscriber, _ = members.pop()
            before = [a.rebalances for _, a in members]
            try:
                await asyncio.wait_for(subscriber.stop(), 10)
            except TimeoutError:  # the broker did not answer its leaving; the group expires it
                log.warning("consumer did not leave its group in time", consumer=self.name)
            deadline = asyncio.get_running_loop().time() + 10
            while any(a.rebalances == b for (_, a), b in zip(members, before, strict=True)):
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)
        for offsets in self._offsets.values():  # the last member's, up to now
            await offsets.close()


class Poll(NamedTuple):
    """What the handler gets of a FastStream batch message: its consumer and raw records."""

    consumer: Any
    records: Sequence[Any]


async def _tolerant(
    records: tuple[ConsumerRecord[Any, Any], ...],
    original: Callable[[tuple[ConsumerRecord[Any, Any], ...]], Awaitable[Any]],
) -> Any:
    """FastStream's batch parser, made to survive any header: it decodes every header value of
    the poll as UTF-8, so one record with a header that is not text (or is null) failed the
    whole poll before the handler saw it — and the consumer, its position already past those
    records, went on without them: every record of the poll lost, none dead-lettered. Such a
    poll is parsed again from copies without those headers; the handler still gets the records
    exactly as they came (:func:`_raw`), and judges each on its own."""
    try:
        return await original(records)
    except (UnicodeDecodeError, AttributeError):
        message = await original(tuple(_text_headers_only(r) for r in records))
        message.raw_message = records
        return message


def _text_headers_only(record: ConsumerRecord[Any, Any]) -> ConsumerRecord[Any, Any]:
    headers = [(k, v) for k, v in record.headers if isinstance(v, bytes) and _is_text(v)]
    return dataclasses.replace(record, headers=headers)


def _is_text(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


async def _raw(message: Any) -> Poll:
    """FastStream decoder that hands the handler the poll's consumer and raw records.

    Not the message itself: FastStream caches the decoded value on the message, and the
    message referring to itself made every poll a reference cycle, so each batch's records
    (values, headers, decoded envelopes) waited for the cycle collector instead of going at
    the end of the batch — with the settled collector's thresholds, tens of MB per process
    that grew with the traffic until a full collection."""
    return Poll(message.consumer, message.raw_message)


def _next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    positions: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        positions[tp] = max(positions.get(tp, 0), r.offset + 1)
    return positions


def _first_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    firsts: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        firsts[tp] = min(firsts.get(tp, r.offset), r.offset)
    return firsts

"""The relay: publishes a service's committed events to Kafka, in log order, at least once.

The event store is the outbox. Inside each service process a relay reads events after its
checkpoint, publishes them (key = stream id, value = the JSON envelope, CloudEvents ``ce_*``
headers, and the service's seal of the value: :mod:`shared.provenance`), waits until the
broker has acknowledged every one, and only then moves its checkpoint. A crash before
publishing loses nothing (the events are still after the checkpoint); a crash after publishing
but before the checkpoint publishes them again, and consumers skip what they
have applied. ``LISTEN``/``NOTIFY`` wakes the relay when an append commits; it also polls, in case
a notification is missed. One instance per service relays at a time (a session advisory lock);
the others stand by and take over within a poll interval when it dies.

The relay runs as a supervised task (``shared/tasks.py``): a lost database session or a broker
error ends the round, and the task is restarted with backoff, reported down meanwhile. An event
the broker refuses for good (too large for it, a topic it will not let us write) is never
skipped — the log's order is the promise — but it must not hold the log up silently: the relay
raises :class:`PublishRefused` naming the event, ``desk_relay_blocked_position`` holds its
position, and ``/ready`` reports the relay down until the cause is removed (see
``docs/architecture.md``).

A relay given a marks topic also says how far it has got in time: after a round that read the
log to its end and had every record acknowledged, it publishes a *mark* — "every event stamped
before T is on its topic" — at most once a :attr:`Relay.mark_interval`, idle or not. A worker
acting on the absence of an event (sla's timers) waits for a mark past the moment, so a relay
stopped or lagging holds it back instead of turning an answer in time into a breach. T is
taken before the round's read: the earlier of the statement's start and the start of every
other transaction of the service's role still open (an event's time is read inside the
transaction that appends it, so one not yet committed is never stamped before T). Under a
driven clock (tests) transactions' starts say nothing about its time, so T is the clock's
reading, taken only when no other transaction is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.database import Connection, connect, identifier
from shared.events import format_time
from shared.eventstore import with_version
from shared.faults import crash_point
from shared.kafka import partition_for, record_size, refused
from shared.keys import Key
from shared.logging import get_logger
from shared.metrics import EVENTS_PUBLISHED, RELAY_BLOCKED, RELAY_LAG, RELAY_LEADER
from shared.provenance import seal

log = get_logger(__name__)

CHECKPOINT = "relay"
MARK_RETRY = 0.05
"""Seconds until a mark not taken (a driven clock while a transaction is open) is tried again."""
TopicRoute = Callable[[str], str]
"""Event type -> physical topic."""


class PublishRefused(Exception):
    """The broker will not take this event, however often it is sent."""

    def __init__(self, position: int, event_id: str, event_type: str, why: str) -> None:
        super().__init__(
            f"the broker refuses event {event_id} ({event_type}) at position {position}: {why}; "
            "the relay stops there until the cause is removed (docs/architecture.md)"
        )
        self.position = position


class Relay:
    """Follows one service's event log and publishes it."""

    def __init__(
        self,
        *,
        service: str,
        database_url: str,
        schema: str,
        producer: AIOKafkaProducer,
        route: TopicRoute,
        key: Key | None,
        batch_size: int = 2000,
        poll_interval: timedelta = timedelta(seconds=1),
        max_record_bytes: int = 1024 * 1024,
        finish_within: float = 5.0,
        marks_topic: str | None = None,
        mark_interval: timedelta = timedelta(milliseconds=250),
        driven_clock: bool = False,
    ) -> None:
        self.service = service
        self.database_url = database_url
        self.schema = identifier(schema)
        self.producer = producer
        self.route = route
        self.key = key
        self.batch_size = batch_size
        self.poll_interval = poll_interval.total_seconds()
        self.max_record_bytes = max_record_bytes
        self.finish_within = finish_within
        """How long a round in progress when the relay is stopped may take to finish."""
        self.marks_topic = marks_topic
        """Where marks go (``None``: this relay publishes none)."""
        self.mark_interval = mark_interval.total_seconds()
        self._next_mark = 0.0
        """Loop time from which the next mark is due."""
        self._mark_sql = _DRIVEN_MARK_SQL if driven_clock else _MARK_SQL
        self.leader = False
        self._partitions: dict[str, list[int]] = {}
        self._wake = asyncio.Event()
        self._source = f"servicedesk/{service}".encode()
        # One round trip a round reads the checkpoint and what follows it (each row carries
        # the checkpoint it was read after, for the conditional update), and one writes the
        # checkpoint and reads the head for the lag: a round per commit is the steady case.
        self._read_sql = (
            "WITH c AS MATERIALIZED (SELECT position FROM checkpoints WHERE name = $1) "
            "SELECT position, event_id::text, stream_id, stream_version, type, subject, "
            "occurred_at, correlation_id, causation_id, envelope::text, "
            "(SELECT position FROM c) AS was "
            f"FROM {self.schema}.events WHERE position > (SELECT position FROM c) "
            "ORDER BY position LIMIT $2"
        )
        self._checkpoint_sql = (
            "UPDATE checkpoints SET position = $2, updated_at = now() "
            "WHERE name = $1 AND position = $3 "
            f"RETURNING (SELECT coalesce(max(position), 0) FROM {self.schema}.events)"
        )

    async def run(self) -> None:
        """Relay until cancelled or until it fails (its supervisor starts it again).

        The checkpoint may lag after a crash (events are published again), never run ahead: it
        is only written once the broker acknowledged. So it need not wait for the disk.
        """
        conn = await connect(self.database_url, schema=self.schema, durable_commits=False)
        try:
            await conn.add_listener(f"{self.schema}_events", self._notified)
            if self.marks_topic is not None and not await _activity_tracked(conn):
                log.error(
                    "relay publishes no marks: track_activities is off, so open transactions "
                    "cannot be seen (timers waiting for marks will wait)"
                )
                self.marks_topic = None
            await self._await_leadership(conn)
            self._set_leader(True)
            await conn.execute(
                "INSERT INTO checkpoints (name, position) VALUES ($1, 0) ON CONFLICT DO NOTHING",
                CHECKPOINT,
            )
            while True:
                # Cleared before reading: a commit notified during the round wakes the next.
                self._wake.clear()
                published = await self._round(conn)
                if published < self.batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._idle_wait())
        finally:
            self._set_leader(False)
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=2))

    async def _round(self, conn: Connection) -> int:
        """One round, let finish when the relay is stopped meanwhile (a graceful stop), for
        :attr:`finish_within` at most: cancelled between the broker's acknowledgement and the
        checkpoint, a round's events would be published again at the next start. A round stuck
        on the broker is cancelled at the bound, as before."""
        round_ = asyncio.ensure_future(self.publish_pending(conn))
        try:
            return await asyncio.shield(round_)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):  # its outcome is the next start's concern
                await asyncio.wait_for(round_, self.finish_within)
            raise

    def _idle_wait(self) -> float:
        """Until the next round when nothing wakes the relay: the poll, or the next mark due."""
        if self.marks_topic is None:
            return self.poll_interval
        due = self._next_mark - asyncio.get_running_loop().time()
        return max(0.0, min(self.poll_interval, due))

    def _mark_due(self) -> bool:
        return self.marks_topic is not None and asyncio.get_running_loop().time() >= self._next_mark

    def _mark_later(self, seconds: float) -> None:
        self._next_mark = asyncio.get_running_loop().time() + seconds

    async def _publish_mark(self, through: datetime) -> None:
        """Say every event stamped before ``through`` is on its topic (the caller has had them
        all acknowledged); sealed like an event, so a reader knows it is this service's."""
        assert self.marks_topic is not None
        value, headers = mark_record(self.service, self.key, through)
        try:
            delivery = await self.producer.send(
                self.marks_topic, value, key=self.service.encode(), partition=0, headers=headers
            )
            await delivery
        except KafkaError as error:  # the marks wait (and the timers with them), not the events
            log.warning("relay mark not published", topic=self.marks_topic, error=repr(error))
        self._mark_later(self.mark_interval)

    async def _await_leadership(self, conn: Connection) -> None:
        """Stand by until this instance holds the service's relay lock."""
        lock = f"relay:{self.schema}"
        while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", lock):  # noqa: ASYNC110
            await asyncio.sleep(self.poll_interval)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    def _set_leader(self, leader: bool) -> None:
        if leader != self.leader:
            log.info("relay leadership", leader=leader, schema=self.schema)
        self.leader = leader
        RELAY_LEADER.labels(self.service).set(1 if leader else 0)

    def _record(self, row: Any) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        """Key, value and headers of one stored event: CloudEvents' and the service's seal."""
        _, event_id, stream, version, type_, subject, time, corr, cause, raw, _ = row
        key = stream.encode()
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", event_id.encode()),
            ("ce_source", self._source),
            ("ce_type", type_.encode()),
            ("ce_time", format_time(time).encode()),
            ("ce_streamid", key),
            ("ce_streamversion", str(version).encode()),
            ("ce_correlationid", corr.encode()),
            ("content-type", b"application/cloudevents+json"),
        ]
        if subject is not None:
            headers.append(("ce_subject", subject.encode()))
        if cause is not None:
            headers.append(("ce_causationid", cause.encode()))
        value = with_version(raw, version).encode()
        if self.key is not None:
            headers.extend(seal(self.key, value))
        return key, value, headers

    async def _send(
        self, rows: list[Any], records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
    ) -> list[tuple[Any, asyncio.Future[Any]]]:
        """Queue rows as record batches, one per partition (in order), and return the
        deliveries to await, each with the first row of its batch. Batches instead of one send
        per event: the relay publishes tens of thousands of events a second."""
        producer = self.producer
        batches: dict[tuple[str, int], tuple[Any, Any]] = {}
        deliveries: list[tuple[Any, asyncio.Future[Any]]] = []
        for row, (key, value, headers) in zip(rows, records, strict=True):
            topic = self.route(row[4])
            partitions = self._partitions.get(topic) or await self._learn_partitions(topic)
            partition = partition_for(key, partitions, partitions)
            first, batch = batches.get((topic, partition), (row, producer.create_batch()))
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                deliveries.append(
                    (first, await producer.send_batch(batch, topic, partition=partition))
                )
                first, batch = row, producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)
            batches[(topic, partition)] = (first, batch)
        for (topic, partition), (first, batch) in batches.items():
            deliveries.append((first, await producer.send_batch(batch, topic, partition=partition)))
        return deliveries

    async def _learn_partitions(self, topic: str) -> list[int]:
        self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        return self._partitions[topic]

    async def _publish(
        self, rows: list[Any], records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
    ) -> None:
        """Send the rows and await every acknowledgement. A refusal for good names the first
        event of the earliest batch the broker refused; anything else is raised as it is."""
        deliveries = await self._send(rows, records)
        outcomes = await asyncio.gather(*(d for _, d in deliveries), return_exceptions=True)
        failed = [
            (first, outcome)
            for (first, _), outcome in zip(deliveries, outcomes, strict=True)
            if isinstance(outcome, BaseException)
        ]
        if not failed:
            return
        first, error = min(failed, key=lambda pair: int(pair[0][0]))
        if refused(error):
            raise PublishRefused(first[0], first[1], first[4], f"{type(error).__name__}: {error}")
        raise error

    def _oversized(
        self, rows: list[Any], records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
    ) -> tuple[int, PublishRefused | None]:
        """How many rows fit the broker's limit before the first that does not, and that one."""
        for index, (row, (key, value, headers)) in enumerate(zip(rows, records, strict=True)):
            size = record_size(key, value, headers)
            if size > self.max_record_bytes:
                why = f"{size} bytes, over the {self.max_record_bytes} the broker takes"
                return index, PublishRefused(row[0], row[1], row[4], why)
        return len(rows), None

    async def publish_pending(self, conn: Connection) -> int:
        """One round: publish up to a batch after the checkpoint; return how many. Then, if a
        mark is due and the round read to the log's end, the mark taken before the read."""
        # Before the read (its own statement, so its own snapshot): what commits after it is
        # stamped after it, or by a transaction it saw open.
        due = self._mark_due()
        through = await conn.fetchval(self._mark_sql) if due else None
        rows = await conn.fetch(self._read_sql, CHECKPOINT, self.batch_size)
        published = await self._publish_rows(conn, rows)
        if through is not None and len(rows) < self.batch_size:
            await self._publish_mark(through)
        elif due and through is None:  # driven, another transaction open: try again soon
            self._mark_later(min(self.mark_interval, MARK_RETRY))
        return published

    async def _publish_rows(self, conn: Connection, rows: list[Any]) -> int:
        if not rows:
            RELAY_LAG.labels(self.service).set(0)
            return 0
        checkpoint = rows[0][-1]
        records = [self._record(row) for row in rows]
        fit, refusal = self._oversized(rows, records)
        rows, records = rows[:fit], records[:fit]
        try:
            if rows:
                crash_point("relay.before_publish")
                await self._publish(rows, records)
                crash_point("relay.after_publish")
                await self._checkpoint(conn, checkpoint, rows[-1][0])
            if refusal is not None:
                raise refusal
        except PublishRefused as refused_for_good:
            RELAY_BLOCKED.labels(self.service).set(refused_for_good.position)
            raise
        RELAY_BLOCKED.labels(self.service).set(0)
        EVENTS_PUBLISHED.labels(self.service).inc(len(rows))
        return len(rows)

    async def _checkpoint(self, conn: Connection, was: int, last: int) -> None:
        # Conditional: if `desk replay` moved the checkpoint meanwhile, its value wins (and the
        # lag is left for the next round, which reads from there).
        head = await conn.fetchval(self._checkpoint_sql, CHECKPOINT, last, was)
        if head is not None:
            RELAY_LAG.labels(self.service).set(max(0, head - last))


def mark_record(
    service: str, key: Key | None, through: datetime
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of a mark: JSON naming the service and the moment, sealed by the
    service's key (``shared.readmarks.RelayMarks`` takes no other). Always on partition 0."""
    value = json.dumps({"service": service, "through": format_time(through)}).encode()
    return value, seal(key, value) if key is not None else []


_OTHERS_OPEN = (
    "SELECT min(xact_start) AS oldest, count(*) AS open FROM pg_stat_activity "
    "WHERE datname = current_database() AND usename = session_user "
    "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
)
_MARK_SQL = f"SELECT least(statement_timestamp(), oldest) FROM ({_OTHERS_OPEN}) o"
_DRIVEN_MARK_SQL = (
    "SELECT CASE WHEN d.value IS NULL THEN least(statement_timestamp(), o.oldest) "
    "WHEN o.open = 0 THEN d.value END "
    f"FROM ({_OTHERS_OPEN}) o LEFT JOIN (SELECT value FROM desk_clock LIMIT 1) d ON true"
)
"""A mark: before the statement's start and every other open transaction's of this login role
(a session of another role shows no start, so only the service's own appends are covered).
Driven, the clock's reading while no other transaction is open, else none this round."""


async def _activity_tracked(conn: Connection) -> bool:
    """Whether sessions report their transactions' starts (``track_activities``, on by
    default): without them a mark could pass an open transaction."""
    return bool(await conn.fetchval("SELECT current_setting('track_activities')::boolean"))


class ReplayRefused(Exception):
    """A replay that would lose events: past the end of the store, or forward past events the
    relay has not published yet (they would never be published)."""


async def replay(
    conn: Connection, schema: str, from_position: int = 0, *, skip_unpublished: bool = False
) -> int:
    """Make the relay of ``schema`` publish again every event after ``from_position``.

    Returns how many events that is. The running relay (if any) is woken and starts over. Moving
    the checkpoint *forward* skips events never published, so it is refused unless
    ``skip_unpublished`` says that is meant; a position past the store's end always is.
    """
    schema = identifier(schema)
    async with conn.transaction():
        head = await conn.fetchval(f"SELECT coalesce(max(position), 0) FROM {schema}.events")
        if from_position > head:
            raise ReplayRefused(
                f"{schema}: position {from_position} is past the end of its store ({head})"
            )
        current = await conn.fetchval(
            f"SELECT position FROM {schema}.checkpoints WHERE name = $1 FOR UPDATE", CHECKPOINT
        )
        published = current or 0
        if from_position > published and not skip_unpublished:
            raise ReplayRefused(
                f"{schema}: its relay has published up to position {published}; moving it to "
                f"{from_position} would skip events {published + 1}..{from_position}, which were "
                "never published (pass --skip-unpublished if that is what you want)"
            )
        await conn.execute(
            f"INSERT INTO {schema}.checkpoints (name, position) VALUES ($1, $2) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now()",
            CHECKPOINT,
            from_position,
        )
        await conn.execute(f"NOTIFY {schema}_events")
        count = await conn.fetchval(
            f"SELECT count(*) FROM {schema}.events WHERE position > $1", from_position
        )
    return int(count)

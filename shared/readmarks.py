"""Up to when a consumer group has surely processed a topic, partition by partition.

A worker that acts on *the absence* of an event (sla's timer: no response came in time) must not
decide while that event may still be unread: a consumer stopped or lagging would otherwise turn
an agent's timely answer into a breach and an escalation. Kafka says how far a group has got in
offsets, not in time, so :class:`ReadMarks` turns one into the other with checkpoints: at a moment
``t`` it asks the topic's end offsets; once the group's committed offsets reach them, every record
published before ``t`` has been processed (a consumer commits only after its transaction).

When was an event stamped ``t`` published? Given the producer's :class:`RelayMarks` — its
relay's statement "every event stamped before T is on its topic", published after the broker
acknowledged them (``shared.relay``) — a checkpoint is taken at the latest such T, read before
the end offsets: a relay stopped or lagging holds the marks back however long it takes. Without
marks, an event stamped ``t - margin`` is taken to be published by ``t``: the margin covers a
relay's usual delay, not a relay stopped for longer.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import UnknownTopicOrPartitionError

from shared.deadletter import Record
from shared.kafka import client_options, poll
from shared.keys import KeyRing
from shared.logging import get_logger
from shared.provenance import sealed_by
from shared.settings import Settings

log = get_logger(__name__)
_TICK = timedelta(microseconds=1)

CHECKPOINTS = 64
"""Checkpoints kept while a partition lags; past this the oldest go (which only delays a mark)."""


MARKS_READ = 500
"""Records of a marks topic fetched at once."""


class ReadMarks:
    """Per partition of ``topic``: the latest time up to which ``group_id`` has read it all."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        group_id: str,
        margin: timedelta,
        *,
        marks: RelayMarks | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.group_id = group_id
        self.margin = margin
        self.marks = marks
        """The topic's producer's marks; without them, the margin."""
        self._until: dict[int, datetime] = {}
        self.partitions: set[int] = set()
        """The topic's partitions, as of the last :meth:`read_until`."""
        self._checkpoints: list[tuple[datetime, dict[int, int]]] = []
        self._ends: AIOKafkaConsumer | None = None
        self._offsets: AIOKafkaConsumer | None = None

    async def read_until(self, now: datetime) -> dict[int, datetime]:
        """Checkpoint ``now`` and return each partition's mark (absent: none yet).

        Raises ``KafkaError`` while the broker is away; the marks then stay where they were.
        """
        at: datetime | None = now - self.margin
        if self.marks is not None:
            through = await self.marks.latest()  # before the end offsets: they hold its events
            # A mark covers what was stamped *before* it; a checkpoint what was at or before.
            at = min(now, through - _TICK) if through is not None else None
        ends = await self._end_offsets()
        self.partitions = set(ends)
        if at is not None:
            self._checkpoints.append((at, ends))
        del self._checkpoints[:-CHECKPOINTS]
        committed = await self._committed(ends)
        for at, checkpoint in self._checkpoints:
            for partition, end in checkpoint.items():
                known = self._until.get(partition)
                if committed.get(partition, 0) >= end and (known is None or at > known):
                    self._until[partition] = at
        if self._until.keys() >= ends.keys():
            floor = min(self._until[p] for p in ends)
            self._checkpoints = [c for c in self._checkpoints if c[0] > floor]
        return dict(self._until)

    async def _end_offsets(self) -> dict[int, int]:
        if self._ends is None:
            self._ends = await _started(AIOKafkaConsumer(**client_options(self.settings)))
        partitions = self._ends.partitions_for_topic(self.topic)
        if not partitions:
            await self._ends.topics()  # metadata not fetched yet, or the topic is new
            partitions = self._ends.partitions_for_topic(self.topic)
        if not partitions:
            raise UnknownTopicOrPartitionError(self.topic)
        found = await self._ends.end_offsets([TopicPartition(self.topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in found.items()}

    async def _committed(self, partitions: dict[int, int]) -> dict[int, int]:
        if self._offsets is None:
            # Of the group, but it never subscribes: it reads the group's offsets, never joins.
            reader = AIOKafkaConsumer(
                **client_options(self.settings), group_id=self.group_id, enable_auto_commit=False
            )
            self._offsets = await _started(reader)
        found = {}
        for partition in partitions:
            offset = await self._offsets.committed(TopicPartition(self.topic, partition))
            found[partition] = offset if offset is not None else 0
        return found

    async def close(self) -> None:
        for client in (self._ends, self._offsets):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._ends = self._offsets = None
        if self.marks is not None:
            await self.marks.close()


class RelayMarks:
    """The latest mark ``issuer``'s relay published on ``topic``: only records sealed by one of
    its keys count (anyone able to write the topic could otherwise fire every timer early)."""

    def __init__(self, settings: Settings, topic: str, issuer: str) -> None:
        self.settings = settings
        self.topic = topic
        self.issuer = issuer
        self.keys = KeyRing.from_settings(settings)
        self.through: datetime | None = None
        """The latest mark read (marks only ever grow: each is true for good once made)."""
        self._next = 0
        self._reader: AIOKafkaConsumer | None = None

    async def latest(self) -> datetime | None:
        """Read what was published since the last call; the latest mark. Raises ``KafkaError``
        while the broker is away."""
        part = TopicPartition(self.topic, 0)
        if self._reader is None:
            reader = AIOKafkaConsumer(
                **client_options(self.settings),
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # marks kept an hour: past them, the oldest left
            )
            self._reader = await _started(reader)
            self._reader.assign([part])
        reader = self._reader
        end = (await reader.end_offsets([part]))[part]
        if end < self._next:  # shorter than what was read: recreated, so its offsets start over
            log.warning("marks topic ends before what was read; reading it from its start",
                        topic=self.topic, read=self._next, end=end)  # fmt: skip
            self._next = 0
        if end <= self._next:
            return self.through
        # The first read starts among the newest (the topic keeps an hour of marks, and a mark
        # says more than all before it); every later one reads each record since the last call.
        # Anyone able to write the topic could otherwise hide each new mark behind a screen of
        # records of their own, and hold every timer for as long as they kept it up.
        reader.seek(part, self._next or max(0, end - CHECKPOINTS))
        ignored = 0
        while self._next < end:
            found = await poll(reader, part, timeout_ms=500, max_records=MARKS_READ)
            records = found.get(part, [])
            if not records:
                first = (await reader.beginning_offsets([part]))[part]
                if first >= end:  # all expired (kept an hour): none to read before the end
                    self._next = end
                break  # else a slow fetch: read again at the next call
            for record in records:
                self._next = record.offset + 1
                ignored += not self._take(Record.of(record))
        if ignored:  # once a call
            log.warning("marks not sealed by their relay, or saying no time, are ignored",
                        topic=self.topic, ignored=ignored)  # fmt: skip
        return self.through

    def _take(self, record: Record) -> bool:
        """Take a record's mark if it is one of the issuer's; False if it is not."""
        if sealed_by(self.keys, record) != self.issuer:
            return False
        try:
            through = datetime.fromisoformat(json.loads(record.value)["through"])
        except (ValueError, KeyError, TypeError, RecursionError):
            through = None
        if through is None or through.tzinfo is None:
            return False
        if self.through is None or through > self.through:
            self.through = through
        return True

    async def close(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader.stop()
        self._reader = None


async def _started(client: AIOKafkaConsumer) -> AIOKafkaConsumer:
    try:
        await client.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await client.stop()
        raise
    return client

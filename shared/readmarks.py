"""Up to when a consumer group has surely processed a topic, partition by partition.

A worker that acts on *the absence* of an event (sla's timer: no response came in time) must not
decide while that event may still be unread: a consumer stopped or lagging would otherwise turn
an agent's timely answer into a breach and an escalation. Kafka says how far a group has got in
offsets, not in time, so :class:`ReadMarks` turns one into the other with checkpoints: at a moment
``t`` it asks the topic's end offsets; once the group's committed offsets reach them, every record
published before ``t`` has been processed (a consumer commits only after its transaction).

An event stamped ``t - margin`` by its producer is taken to be published by ``t``: the margin
covers a relay's usual delay and small clock differences, not a relay stopped for longer.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import UnknownTopicOrPartitionError

from shared.kafka import client_options
from shared.settings import Settings

CHECKPOINTS = 64
"""Checkpoints kept while a partition lags; past this the oldest go (which only delays a mark)."""


class ReadMarks:
    """Per partition of ``topic``: the latest time up to which ``group_id`` has read it all."""

    def __init__(self, settings: Settings, topic: str, group_id: str, margin: timedelta) -> None:
        self.settings = settings
        self.topic = topic
        self.group_id = group_id
        self.margin = margin
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
        ends = await self._end_offsets()
        self.partitions = set(ends)
        self._checkpoints.append((now - self.margin, ends))
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


async def _started(client: AIOKafkaConsumer) -> AIOKafkaConsumer:
    try:
        await client.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await client.stop()
        raise
    return client

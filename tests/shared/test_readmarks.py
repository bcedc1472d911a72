"""Read marks against a real broker: a partition is marked read up to a moment only once the
group has committed every record published before it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.kafka import client_options
from shared.readmarks import ReadMarks, RelayMarks
from tests.support.events import publish_mark
from tests.support.kafka import KafkaProbe, publish_with_unreadable_header_key
from tests.support.waiting import eventually

T1 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
MARGIN = timedelta(seconds=1)


async def commit(kafka: KafkaProbe, group: str, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` for ``group`` as its consumer would after its transaction."""
    topic = kafka.settings.topic("lifecycle")
    consumer = AIOKafkaConsumer(
        **client_options(kafka.settings), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in offsets]
        consumer.assign(partitions)
        await consumer.commit({TopicPartition(topic, p): o for p, o in offsets.items()})
    finally:
        await consumer.stop()


@pytest.mark.asyncio
async def test_a_partition_is_read_up_to_a_moment_once_its_records_then_are_committed(
    kafka: KafkaProbe,
) -> None:
    await kafka.create("lifecycle")
    for partition, count in ((0, 3), (1, 2)):
        for n in range(count):
            await kafka.publish("lifecycle", f"record {n}", partition=partition)
    group = kafka.settings.topic("lifecycle-reader")
    marks = ReadMarks(kafka.settings, kafka.settings.topic("lifecycle"), group, MARGIN)
    try:
        read = await marks.read_until(T1)
        assert 0 not in read and 1 not in read  # nothing committed yet
        assert all(at == T1 - MARGIN for at in read.values())  # the empty partitions
        await commit(kafka, group, {0: 3, 1: 1})
        await kafka.publish("lifecycle", "record 3", partition=0)  # published after the checkpoint
        read = await marks.read_until(T1 + timedelta(minutes=1))
        assert read[0] == T1 - MARGIN  # read up to the first moment, not the second
        assert 1 not in read  # one record published before it is still unread
        await commit(kafka, group, {0: 4, 1: 2})
        read = await marks.read_until(T1 + timedelta(minutes=2))
        assert read[0] == read[1] == T1 + timedelta(minutes=2) - MARGIN
    finally:
        await marks.close()


@pytest.mark.asyncio
async def test_a_topic_the_broker_does_not_know_is_an_error_not_a_mark(kafka: KafkaProbe) -> None:
    marks = ReadMarks(kafka.settings, kafka.settings.topic("never-created"), "nobody", MARGIN)
    try:
        with pytest.raises(KafkaError):
            await marks.read_until(T1)
    finally:
        await marks.close()


@pytest.mark.asyncio
async def test_with_a_producers_marks_a_partition_is_read_only_up_to_its_latest_mark(
    kafka: KafkaProbe,
) -> None:
    """Reading the topic to its end says nothing of what its producer has not published yet:
    only its mark does, however far the clock has gone."""
    await kafka.create("lifecycle")
    await kafka.publish("lifecycle", "record 0", partition=0)
    group = kafka.settings.topic("lifecycle-reader")
    dispatch = RelayMarks(kafka.settings, kafka.settings.topic("dispatch.marks"), "dispatch")
    marks = ReadMarks(
        kafka.settings, kafka.settings.topic("lifecycle"), group, timedelta(0), marks=dispatch
    )
    try:
        await kafka.create("dispatch.marks")
        assert await marks.read_until(T1) == {}  # no mark yet: nothing is read past anything
        await publish_mark(kafka, T1 - timedelta(minutes=5))
        await commit(kafka, group, {0: 1})
        read = await marks.read_until(T1)
        assert set(read.values()) == {T1 - timedelta(minutes=5, microseconds=1)}
        assert read.keys() == marks.partitions
    finally:
        await marks.close()


@pytest.mark.asyncio
async def test_marks_are_read_again_once_their_topic_is_recreated(kafka: KafkaProbe) -> None:
    """A recreated topic's offsets start over: a reader that waited for the old end would take
    no mark for as long as the old topic had taken to fill, and sla's timers with it."""
    marks = RelayMarks(kafka.settings, kafka.settings.topic("dispatch.marks"), "dispatch")
    try:
        for minutes in range(5):
            await publish_mark(kafka, T1 + timedelta(minutes=minutes))
        assert await marks.latest() == T1 + timedelta(minutes=4)

        admin = AIOKafkaAdminClient(**client_options(kafka.settings))
        await admin.start()
        try:
            await admin.delete_topics([kafka.settings.topic("dispatch.marks")])
        finally:
            await admin.close()
        await publish_mark(kafka, T1 + timedelta(minutes=9))  # creates it again
        await eventually(marks.latest, lambda t: t == T1 + timedelta(minutes=9), timeout=10)
    finally:
        await marks.close()


@pytest.mark.asyncio
async def test_a_record_the_kafka_client_cannot_read_hides_no_mark(kafka: KafkaProbe) -> None:
    """One such record among the marks failed every read of them, and with it sla's timers."""
    marks = RelayMarks(kafka.settings, kafka.settings.topic("dispatch.marks"), "dispatch")
    try:
        await publish_mark(kafka, T1)
        await publish_with_unreadable_header_key(kafka.settings, "dispatch.marks", b"{}")
        await publish_mark(kafka, T1 + timedelta(minutes=1))
        assert await eventually(marks.latest, lambda t: t == T1 + timedelta(minutes=1), timeout=10)
    finally:
        await marks.close()


@pytest.mark.asyncio
async def test_records_forged_after_each_mark_hide_none_of_them(kafka: KafkaProbe) -> None:
    """Only the newest records were read: anyone able to write the topic could follow each mark
    with a screen of unsealed records claiming any time, and sla's timers waited for good."""
    marks = RelayMarks(kafka.settings, kafka.settings.topic("dispatch.marks"), "dispatch")
    forged = {"service": "dispatch", "through": (T1 + timedelta(days=365)).isoformat()}
    try:
        await publish_mark(kafka, T1)
        assert await marks.latest() == T1
        for minute in (1, 2):
            await publish_mark(kafka, T1 + timedelta(minutes=minute))
            for _ in range(200):
                await kafka.publish("dispatch.marks", forged, key="dispatch", partition=0)
            assert await marks.latest() == T1 + timedelta(minutes=minute)
    finally:
        await marks.close()

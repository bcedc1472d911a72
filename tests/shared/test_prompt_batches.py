"""A batch consumer hands records on as soon as they are there: no sleep after an empty poll."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import KafkaBroker

from shared.kafka import PromptBatchSubscriber, client_options, prompt_batches
from shared.settings import Settings
from tests.support.kafka import KafkaProbe

TIMEOUT_MS = 1000


def batch_subscriber(settings: Settings, topic: str) -> Any:
    broker = KafkaBroker(settings.require_bootstrap_servers())
    return broker.subscriber(
        topic, group_id="prompt", batch=True, batch_timeout_ms=TIMEOUT_MS, max_records=10
    )


@pytest.mark.unit
def test_only_a_batch_subscriber_is_made_prompt() -> None:
    broker = KafkaBroker("127.0.0.1:9")
    batches = broker.subscriber("t", group_id="g", batch=True, batch_timeout_ms=100)
    prompt_batches(batches)
    assert isinstance(batches, PromptBatchSubscriber)
    with pytest.raises(TypeError, match="batch subscriber"):
        prompt_batches(broker.subscriber("t", group_id="g"))


@pytest.mark.asyncio
async def test_an_empty_poll_waits_once_and_the_next_returns_what_arrived(
    settings: Settings, kafka: KafkaProbe
) -> None:
    await kafka.create("prompt")
    topic = settings.topic("prompt")
    subscriber = batch_subscriber(settings, topic)
    prompt_batches(subscriber)
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(settings.topic_partitions)])
        await consumer.seek_to_beginning()
        polls: list[float] = []
        getmany = consumer.getmany

        async def timed_getmany(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return await getmany(*args, **kwargs)
            finally:
                polls.append(time.monotonic() - started)

        consumer.getmany = timed_getmany
        started = time.monotonic()
        assert await subscriber.get_msg(consumer) == ()
        # FastStream's own subscriber sleeps another batch_timeout_ms here (a whole second).
        outside_getmany = time.monotonic() - started - sum(polls)
        assert polls and polls[0] >= TIMEOUT_MS / 1000 * 0.9
        assert outside_getmany < TIMEOUT_MS / 1000 / 2

        await kafka.publish("prompt", {"n": 1}, key="k")
        records = await subscriber.get_msg(consumer)
        assert [r.value for r in records] == [b'{"n": 1}']
    finally:
        await consumer.stop()

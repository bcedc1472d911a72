"""What a consumer's handler is handed of a FastStream batch message (pure)."""

from __future__ import annotations

import gc
import weakref

import pytest
from aiokafka.structs import ConsumerRecord
from faststream.kafka.message import KafkaAckableMessage

from shared.consumer import Poll, _raw

pytestmark = pytest.mark.unit


def record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="t",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=b"v" * 1000,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=1000,
        headers=(),
    )


@pytest.mark.asyncio
async def test_a_decoded_poll_is_freed_without_the_cycle_collector() -> None:
    """FastStream caches the decoded value on the message: a decoder returning the message
    itself made each poll a cycle, its records kept until the collector ran."""
    consumer = object()
    message = KafkaAckableMessage(raw_message=(record(1), record(2)), body=b"", consumer=consumer)
    message.set_decoder(_raw)
    poll = await message.decode()
    assert poll == Poll(consumer, message.raw_message)
    gone = weakref.ref(message)
    gc.disable()
    try:
        del message
        assert gone() is None
    finally:
        gc.enable()

"""Our partitioner puts a key where the Java client (and aiokafka) would; a record the client
cannot read stops no consumer."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import murmur2 as reference
from hypothesis import given
from hypothesis import strategies as st

from shared.deadletter import Reason
from shared.kafka import murmur2, partition_for
from shared.service import Service
from shared.settings import Settings
from tests.support import probe
from tests.support.kafka import KafkaProbe, publish_with_unreadable_header_key
from tests.support.services import running
from tests.support.waiting import eventually


@pytest.mark.unit
@given(st.binary(max_size=200))
def test_murmur2_matches_the_reference(key: bytes) -> None:
    assert murmur2(key) == reference(key)


@pytest.mark.unit
@given(st.binary(min_size=1, max_size=60), st.integers(1, 64))
def test_a_key_goes_to_the_reference_partition(key: bytes, count: int) -> None:
    partitions = list(range(count))
    expected = (reference(key) & 0x7FFFFFFF) % count
    assert partition_for(key, partitions, partitions) == expected


async def _applied(service: Service, counter: str) -> int:
    return int(
        await service.pool.fetchval("SELECT count(*) FROM applied WHERE counter = $1", counter)
    )


@pytest.mark.asyncio
async def test_a_record_the_kafka_client_cannot_read_is_dead_lettered_and_the_rest_applied(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """aiokafka's reader raises on a header key that is not UTF-8, before any of our code sees
    the record: every poll of its partition failed, so the consumer stalled there for good
    (restarts too) and nothing was dead-lettered. Now it is dead-lettered by its coordinates
    and everything around it — before it in the same fetch, after it, on another partition —
    is applied once."""
    await kafka.create(probe.COMMANDS)
    for name in ("r0", "r1"):
        await kafka.publish(probe.COMMANDS, probe.command(name, name), key="h", partition=0)
    bad = await publish_with_unreadable_header_key(
        settings, probe.COMMANDS, probe.command("bad", "x")
    )
    await kafka.publish(probe.COMMANDS, probe.command("r3", "r3"), key="h", partition=0)
    await kafka.publish(probe.COMMANDS, probe.command("p1", "p1"), key="h", partition=1)
    service = probe.build(settings, port=0)
    async with running(service):
        for counter in ("r0", "r1", "r3", "p1"):
            await eventually(lambda c=counter: _applied(service, c), what=counter)  # type: ignore[misc]
        letters = await eventually(
            lambda: service.pool.fetch('SELECT partition, "offset", reason FROM dead_letters')
        )
        assert [tuple(r) for r in letters] == [(0, bad, Reason.UNREADABLE)]
        await kafka.publish(probe.COMMANDS, probe.command("later", "later"), partition=0)
        await eventually(lambda: _applied(service, "later"), what="a record published later")
        assert [await _applied(service, c) for c in ("r0", "r1", "r3", "p1", "x")] == [1] * 4 + [0]
        assert all((await service.readiness()).values())

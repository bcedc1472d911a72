"""Processed offsets are committed once an interval, not once a batch; never for a partition
taken away; kept and tried again when a commit fails; all committed on a stop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from shared import offsets as offsets_module
from shared.offsets import PendingOffsets
from shared.settings import Settings
from tests.support import probe
from tests.support.kafka import KafkaProbe
from tests.support.observer import ConsumerLag, Group
from tests.support.services import running
from tests.support.waiting import eventually

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


class GroupMember:
    """The two things :class:`PendingOffsets` asks of an aiokafka consumer, recorded."""

    def __init__(
        self, *held: TopicPartition, failures: int = 0, hangs: bool = False, takes: float = 0
    ) -> None:
        self.held = set(held)
        self.commits: list[dict[TopicPartition, int]] = []
        self.failures = failures
        self.hangs = hangs
        self.takes = takes
        self.committing = asyncio.Event()

    def assignment(self) -> set[TopicPartition]:
        return set(self.held)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committing.set()
        if self.hangs:  # the broker stopped: no answer before the client's request timeout
            await asyncio.Event().wait()
        await asyncio.sleep(self.takes)  # the broker's round trip
        if self.failures:
            self.failures -= 1
            raise KafkaConnectionError("the broker is away")
        self.commits.append(dict(offsets))


def pending(member: GroupMember, interval: float) -> tuple[PendingOffsets, list[Any]]:
    told: list[Any] = []
    offsets = PendingOffsets(member, interval, lambda _, o: told.append(o), "test")
    return offsets, told


@pytest.mark.unit
@pytest.mark.asyncio
async def test_the_batches_of_an_interval_make_one_commit_of_their_latest_offsets() -> None:
    member = GroupMember(A, B)
    offsets, told = pending(member, 0.05)
    await offsets.processed({A: 5})
    await offsets.processed({A: 9, B: 3})
    await offsets.processed({A: 7})  # a rewound batch applied again: never backwards
    assert member.commits == []
    await eventually(lambda: _value(member.commits), timeout=2)
    await asyncio.sleep(0.1)
    assert member.commits == [{A: 9, B: 3}]
    assert told == [{A: 9, B: 3}]
    assert offsets.pending == {}


@pytest.mark.unit
@pytest.mark.asyncio
async def test_an_interval_of_zero_commits_each_batch_at_once() -> None:
    member = GroupMember(A)
    offsets, _ = pending(member, 0)
    await offsets.processed({A: 1})
    await offsets.processed({A: 2})
    assert member.commits == [{A: 1}, {A: 2}]


@pytest.mark.unit
@pytest.mark.asyncio
async def test_a_partition_taken_away_is_never_committed_by_its_former_owner() -> None:
    member = GroupMember(A, B)
    offsets, _ = pending(member, 60)
    await offsets.processed({A: 5, B: 6})
    member.held = {B}  # a rebalance gave A to another member, which may be past 5 already
    await offsets.close()
    assert member.commits == [{B: 6}]
    assert offsets.pending == {}


@pytest.mark.unit
@pytest.mark.asyncio
async def test_partitions_being_taken_away_have_their_offsets_committed_at_once() -> None:
    """A rebalance revoking A (``on_partitions_revoked``) commits what was processed of A then
    and there, not at the end of the interval — by then A's new owner has started from the last
    commit and applies the batch again — and leaves B's to the interval."""
    member = GroupMember(A, B)
    offsets, _ = pending(member, 60)
    await offsets.processed({A: 5, B: 6})
    await offsets.commit_now([A])
    offsets.forget([A])
    member.held = {B}
    assert member.commits == [{A: 5}]
    assert offsets.pending == {B: 6}
    await offsets.close()
    assert member.commits == [{A: 5}, {B: 6}]


@pytest.mark.unit
@pytest.mark.asyncio
async def test_a_failed_commit_keeps_its_offsets_and_tries_again() -> None:
    member = GroupMember(A, failures=2)
    offsets, _ = pending(member, 0.02)
    await offsets.processed({A: 4})
    await eventually(lambda: _value(member.commits), timeout=2)
    assert member.commits == [{A: 4}]
    assert member.failures == 0


@pytest.mark.unit
@pytest.mark.asyncio
async def test_a_batch_processed_while_a_commit_is_in_flight_is_committed_without_another() -> None:
    """The last batch before a quiet spell came during the previous commit: it must not wait for
    a batch that may never come (the group would stay a batch behind for good)."""
    member = GroupMember(A, takes=0.2)
    offsets, _ = pending(member, 0.05)
    await offsets.processed({A: 1})
    await asyncio.wait_for(member.committing.wait(), 2)
    await offsets.processed({A: 2})  # while {A: 1} is on its way
    await eventually(lambda: _value(len(member.commits)), lambda n: n == 2, timeout=3)
    assert member.commits == [{A: 1}, {A: 2}]
    assert offsets.pending == {}


@pytest.mark.unit
@pytest.mark.asyncio
async def test_a_stop_does_not_wait_on_a_broker_that_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(offsets_module, "PROMPT_COMMIT_SECONDS", 0.1)
    member = GroupMember(A, hangs=True)
    offsets, _ = pending(member, 60)
    await offsets.processed({A: 1})
    await asyncio.wait_for(offsets.close(), 2)  # given up after 0.1 s, not the client's 40
    assert member.commits == []


async def _value(value: Any) -> Any:
    return value


@pytest.mark.asyncio
async def test_offsets_wait_for_the_interval_and_a_stop_commits_them(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """On the broker: a batch applied is not committed before the interval (a minute here),
    and a graceful stop commits it, so the next start redelivers nothing."""
    await kafka.create(probe.COMMANDS, probe.EVENTS)
    settings = kafka.settings.replace(consumer_commit_interval="1m")
    service = probe.build(settings, port=0, tally=False)  # the commands consumer alone
    group = Group(settings.topic("probe.commands"), (settings.topic(probe.COMMANDS),))
    lag = ConsumerLag(settings, [group])
    try:
        async with running(service):
            for i in range(5):
                await kafka.publish(probe.COMMANDS, probe.command(f"o-{i}", "c"), key="c")
            applied = await eventually(
                lambda: service.pool.fetchval("SELECT count(*) FROM events"), lambda n: n == 5
            )
            assert applied == 5
            assert (await lag.lag())[group.group_id] == 5  # applied, not yet committed
        assert (await lag.lag())[group.group_id] == 0  # the stop committed them
    finally:
        await lag.close()

"""The consumer plumbing: exactly-once effects, poison messages, dead letters (real servers)."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.database import Connection, connect
from shared.deadletter import list_dead_letters, replay_dead_letter
from shared.local.ports import free_port
from shared.settings import Settings
from tests.support import probe
from tests.support.kafka import KafkaProbe
from tests.support.processes import ServiceProcess
from tests.support.services import running
from tests.support.waiting import eventually


async def count(pool_or_conn: asyncpg.Pool | Connection, sql: str, *args: object) -> int:
    return int(await pool_or_conn.fetchval(sql, *args))


@pytest.mark.asyncio
async def test_a_redelivered_message_has_one_effect(settings: Settings, kafka: KafkaProbe) -> None:
    service = probe.build(settings, port=0)
    async with running(service):
        for _ in range(3):
            await kafka.publish(probe.COMMANDS, probe.command("same-id", "c1", 5), key="c1")
        await kafka.publish(probe.COMMANDS, probe.command("other-id", "c1", 1), key="c1")

        async def tallied() -> int:
            return await count(service.pool, "SELECT count(*) FROM applied")

        await eventually(tallied, lambda n: n >= 2, what="two applied bumps")
        await kafka.all_records(probe.COMMANDS)  # let every copy be consumed
        async with service.pool.acquire() as conn:
            events = await service.store.read_stream(conn, "counter-c1")
            assert [e.decode().amount for e in events] == [5, 1]  # type: ignore[attr-defined]
            assert await conn.fetchval("SELECT total FROM tallies WHERE counter = 'c1'") == 6
            assert await count(conn, "SELECT count(*) FROM applied") == 2


@pytest.mark.asyncio
async def test_consumers_of_one_process_share_the_partitions_and_stop_in_turn(
    settings: Settings, kafka: KafkaProbe
) -> None:
    settings = settings.replace(consumer_concurrency=2)
    service = probe.build(settings, port=0, tally=False)
    async with running(service):
        runner = service.consumers[0]

        async def split() -> list[set[object]]:
            return [set(a) for a in runner.assignments]

        first, second = await eventually(split, all, what="both consumers own partitions")
        assert not first & second
        assert len(first | second) == settings.topic_partitions
        for i in range(30):
            await kafka.publish(probe.COMMANDS, probe.command(f"s-{i}", f"c{i}"), key=f"c{i}")

        async def applied() -> int:
            return await count(service.pool, "SELECT count(*) FROM events")

        await eventually(applied, lambda n: n == 30)
    # The rolling stop left the group healthy: the next start joins and goes on.
    again = probe.build(settings, port=0, tally=False)
    async with running(again):
        await kafka.publish(probe.COMMANDS, probe.command("after", "a"), key="a")
        assert await eventually(
            lambda: count(again.pool, "SELECT count(*) FROM events"), lambda n: n == 31
        )


@pytest.mark.asyncio
async def test_a_poison_message_is_dead_lettered_while_other_partitions_flow(
    kafka: KafkaProbe,
) -> None:
    settings = kafka.settings.replace(consumer_max_attempts=3, consumer_retry_backoff="1s")
    service = probe.build(settings, port=0)
    before = _metrics()
    async with running(service):
        await kafka.publish(
            probe.COMMANDS, probe.command("poison", "p", fail="always"), partition=0
        )
        await kafka.publish(probe.COMMANDS, probe.command("after-poison", "p"), partition=0)

        async def failing_once() -> float:
            return _metrics(before).get("desk_messages_retried_total", 0.0)

        await eventually(failing_once, lambda n: n >= 1, what="first failed attempt")
        for i, partition in enumerate((1, 2, 1, 2)):
            await kafka.publish(
                probe.COMMANDS, probe.command(f"ok-{i}", f"o{i}"), partition=partition
            )

        async def applied_ok() -> int:
            return await count(service.pool, "SELECT count(*) FROM applied WHERE counter LIKE 'o%'")

        await eventually(applied_ok, lambda n: n == 4, timeout=10, what="other partitions applied")
        # ...while the poison is still being retried, not yet given up on:
        assert await count(service.pool, "SELECT count(*) FROM dead_letters") == 0

        [letter] = await kafka.await_records(f"{probe.COMMANDS}.dlq", lambda r: True, timeout=30)
        assert json.loads(letter.value)["id"] == "poison"
        assert letter.header("dlq_reason") == "handler_failed"
        assert letter.header("dlq_attempts") == "3"
        assert letter.header("dlq_consumer") == "probe.commands"
        assert letter.header("dlq_topic") == settings.topic(probe.COMMANDS)
        assert letter.header("dlq_partition") == "0"
        assert letter.header("dlq_offset") == "0"
        assert "is poison" in (letter.header("dlq_error") or "")

        async def after_poison() -> int:
            return await count(service.pool, "SELECT count(*) FROM applied WHERE counter = 'p'")

        await eventually(after_poison, lambda n: n == 1, what="the message behind the poison")
        stored = await list_dead_letters(await _conn(settings), "probe")
        assert [(d.reason, d.attempts, d.offset) for d in stored] == [("handler_failed", 3, 0)]


@pytest.mark.asyncio
async def test_a_transient_failure_is_retried_then_applied_once(
    settings: Settings, kafka: KafkaProbe
) -> None:
    service = probe.build(settings, port=0)
    before = _metrics()
    async with running(service):
        await kafka.publish(probe.COMMANDS, probe.command("flaky", "f", fail="2"))

        async def applied() -> int:
            return await count(service.pool, "SELECT count(*) FROM applied WHERE counter = 'f'")

        await eventually(applied, lambda n: n >= 1)
        # Attempt 1 failed inside the batch, attempt 2 alone (a retry is scheduled), 3 succeeds.
        assert _metrics(before)["desk_messages_retried_total"] == 1
        assert await count(service.pool, "SELECT count(*) FROM dead_letters") == 0
        assert await applied() == 1


@pytest.mark.asyncio
async def test_bad_bytes_go_straight_to_the_dead_letter_topic_and_the_consumer_goes_on(
    settings: Settings, kafka: KafkaProbe
) -> None:
    service = probe.build(settings, port=0)
    async with running(service):
        await kafka.publish(probe.COMMANDS, b"{not json", key="k")
        await kafka.publish(probe.COMMANDS, {"counter": "no-id"}, key="k")
        await kafka.publish(probe.EVENTS, b"\xff\xfe binary", key="k")
        await kafka.publish(
            probe.EVENTS,
            {
                "id": "4f7c1b2e-0000-4000-8000-000000000001",
                "source": "x",
                "type": "test.probe.counter_bumped.v1",
                "time": "2026-01-01T00:00:00Z",
                "streamid": "s",
                "streamversion": 1,
                "correlationid": "c",
                "data": {"counter": "missing amount"},
            },
        )
        await kafka.publish(probe.COMMANDS, probe.command("good", "g"), key="k")

        commands_dlq = await kafka.await_records(f"{probe.COMMANDS}.dlq", lambda r: True, count=2)
        events_dlq = await kafka.await_records(f"{probe.EVENTS}.dlq", lambda r: True, count=2)
        assert sorted(r.header("dlq_reason") or "" for r in commands_dlq) == [
            "schema_invalid",
            "undecodable",
        ]
        assert sorted(r.header("dlq_reason") or "" for r in events_dlq) == [
            "schema_invalid",
            "undecodable",
        ]
        assert all(r.header("dlq_attempts") == "1" for r in [*commands_dlq, *events_dlq])

        async def good() -> int:
            return await count(service.pool, "SELECT count(*) FROM applied WHERE counter = 'g'")

        await eventually(good, lambda n: n == 1, what="the valid command after the bad ones")
        assert (await service.readiness())["consumers"]


@pytest.mark.asyncio
async def test_a_replayed_dead_letter_is_applied_once_the_cause_is_gone(
    settings: Settings, kafka: KafkaProbe
) -> None:
    settings = settings.replace(consumer_max_attempts=3)
    service = probe.build(settings, port=0)
    async with running(service):
        # Fails 4 times: dead-lettered after 3 attempts, succeeds on the 2nd try after replay.
        await kafka.publish(probe.COMMANDS, probe.command("late", "l", fail="4"))
        conn = await _conn(settings)
        try:

            async def letters() -> int:
                return len(await list_dead_letters(conn, "probe"))

            await eventually(letters, lambda n: n == 1, what="dead letter")
            [letter] = await list_dead_letters(conn, "probe")
            await replay_dead_letter(conn, service.producer, letter)

            async def applied() -> int:
                return await count(conn, "SELECT count(*) FROM probe.applied WHERE counter = 'l'")

            await eventually(applied, lambda n: n == 1, what="replayed message applied")
            assert await list_dead_letters(conn, "probe") == []
            [replayed] = await list_dead_letters(conn, "probe", include_replayed=True)
            assert replayed.replayed_at is not None
        finally:
            await conn.close()


@pytest.mark.asyncio
async def test_a_consumer_killed_between_its_transaction_and_its_offset_commit(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """SIGKILL right after the effects commit: the batch is redelivered and has no second effect."""
    await kafka.create(probe.COMMANDS, probe.EVENTS)
    for i in range(30):
        await kafka.publish(probe.COMMANDS, probe.command(f"k-{i}", f"c{i % 4}"), key=f"c{i % 4}")

    port = free_port()
    process = ServiceProcess(
        "tests.support.probe", settings, port, tmp_path / "probe.log", {"PROBE_PORT": str(port)}
    )
    process.start(DESK_CRASH_AT="consumer.after_transaction")
    assert await process.wait_exit(60) == -9, process.logs()[-2000:]

    conn = await _conn(settings)
    try:
        committed = await count(conn, "SELECT count(*) FROM probe.processed_messages")
        assert committed > 0, "the crash came after a committed transaction"

        process.start()
        await process.wait_ready()

        async def applied() -> int:
            return await count(conn, "SELECT count(DISTINCT message_id) FROM probe.applied")

        await eventually(applied, lambda n: n == 30, timeout=60, what="all 30 bumps applied")
        await kafka.all_records(probe.EVENTS)
        assert await count(conn, "SELECT count(*) FROM probe.applied") == 30
        assert await count(conn, "SELECT count(*) FROM probe.events") == 30
        assert await conn.fetchval("SELECT sum(total) FROM probe.tallies") == 30
        duplicates = (await _metrics_at(port)).get("desk_messages_duplicate_total", 0)
        assert duplicates > 0, "the redelivered batch was recognised and skipped"
    finally:
        await conn.close()
        await process.stop()


async def _conn(settings: Settings) -> Connection:
    return await connect(settings.require_database_url(), schema="probe")


def _metrics(since: dict[str, float] | None = None) -> dict[str, float]:
    """The probe's counters in this process, minus a snapshot taken earlier."""
    from prometheus_client import REGISTRY

    totals: dict[str, float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.labels.get("service") == "probe" and sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    if since:
        totals = {k: v - since.get(k, 0.0) for k, v in totals.items()}
    return totals


async def _metrics_at(port: int) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        name, _, rest = line.partition("{")
        value = float(rest.rsplit(" ", 1)[1])
        totals[name] = totals.get(name, 0.0) + value
    return totals

"""The relay: the event store is the outbox, published in order, at least once, across crashes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from shared.database import connect, with_database
from shared.eventstore import ANY_VERSION, EventStore, EventTooLarge, PendingEvent
from shared.kafka import make_producer
from shared.keys import KeyRing
from shared.local.broker import EmbeddedBroker
from shared.local.ports import free_port
from shared.migrations import migrate
from shared.provenance import seal
from shared.readmarks import RelayMarks
from shared.relay import Relay, ReplayRefused, mark_record, replay
from shared.service import Service
from shared.settings import Settings
from shared.unit_of_work import Cause, UnitOfWork
from tests.conftest import SettingsFactory
from tests.support import probe
from tests.support.events import publish_mark
from tests.support.infrastructure import SessionInfrastructure
from tests.support.kafka import KafkaProbe
from tests.support.processes import ServiceProcess
from tests.support.services import running
from tests.support.waiting import eventually


def event_ids(records: list) -> list[str]:  # type: ignore[type-arg]
    return [r.header("ce_id") for r in records]


@pytest.mark.asyncio
async def test_events_are_published_in_stream_order_with_cloudevents_headers(
    settings: Settings, kafka: KafkaProbe
) -> None:
    service = probe.build(settings.replace(relay_poll_interval="30s"), port=0, tally=False)
    async with running(service):
        for i in range(20):
            await kafka.publish(
                probe.COMMANDS, probe.command(f"o-{i}", "ordered", i), key="ordered"
            )
        started = time.monotonic()
        records = await kafka.await_records(
            probe.EVENTS, lambda r: r.key == b"counter-ordered", count=20
        )
        # Woken by NOTIFY, not by the 30 s poll.
        assert time.monotonic() - started < 10
    values = [json.loads(r.value) for r in records]
    assert [v["data"]["amount"] for v in values] == list(range(20))
    assert [v["streamversion"] for v in values] == list(range(1, 21))
    first = records[0]
    assert first.header("ce_specversion") == "1.0"
    assert first.header("ce_type") == "test.probe.counter_bumped.v1"
    assert first.header("ce_source") == "servicedesk/probe"
    assert first.header("ce_subject") == "ordered"
    assert first.header("ce_id") == values[0]["id"]
    assert first.header("ce_streamid") == "counter-ordered"
    assert first.header("ce_correlationid") == "o-0"
    assert first.header("content-type") == "application/cloudevents+json"
    assert (first.header("ce_time") or "").endswith("Z")


@pytest.mark.asyncio
async def test_replay_publishes_the_store_again(settings: Settings, kafka: KafkaProbe) -> None:
    service = probe.build(settings, port=0, tally=False)
    async with running(service):
        for i in range(5):
            await kafka.publish(probe.COMMANDS, probe.command(f"r-{i}", "r"), key="r")
        await kafka.await_records(probe.EVENTS, lambda r: True, count=5)
        conn = await connect(settings.require_database_url())
        try:
            assert await replay(conn, "probe", 2) == 3
        finally:
            await conn.close()
        records = await kafka.await_records(probe.EVENTS, lambda r: True, count=8)
    ids = event_ids(records)
    assert len(ids) == 8 and len(set(ids)) == 5
    assert ids[5:] == ids[2:5], "positions 3..5 again, in order"


@pytest.mark.asyncio
async def test_one_relay_per_service_and_a_standby_takes_over(
    settings: Settings, kafka: KafkaProbe
) -> None:
    first = probe.build(settings, port=0, tally=False)
    second = probe.build(settings, port=0, tally=False)
    async with running(first):
        assert first.relay is not None
        await eventually(lambda: _value(first.relay.leader), what="first relay leads")  # type: ignore[union-attr]
        async with running(second):
            assert second.relay is not None and not second.relay.leader
            await first.app.stop()  # the leader goes away...
            await eventually(lambda: _value(second.relay.leader), what="standby takes over")  # type: ignore[union-attr]
            await kafka.publish(probe.COMMANDS, probe.command("after", "a"), key="a")
            await kafka.await_records(probe.EVENTS, lambda r: r.key == b"counter-a")
        await first.app.start()  # so that leaving `running(first)` stops a started app


async def _value(value: bool) -> bool:
    return value


@pytest.mark.asyncio
async def test_a_graceful_stop_lets_the_round_in_progress_checkpoint_what_it_published(
    settings: Settings, kafka: KafkaProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped between the broker's acknowledgement and the checkpoint (a deploy's SIGTERM),
    the relay finishes the round: the next start publishes none of it again."""
    published = asyncio.Event()
    real = Relay._publish

    async def acknowledged_then_slow(relay: Relay, rows: list, records: list) -> None:  # type: ignore[type-arg]
        await real(relay, rows, records)
        published.set()
        await asyncio.sleep(0.5)  # the window a stop used to fall into

    monkeypatch.setattr(Relay, "_publish", acknowledged_then_slow)
    service = probe.build(settings, port=0, tally=False)
    async with running(service):
        await kafka.publish(probe.COMMANDS, probe.command("g-1", "g"), key="g")
        await asyncio.wait_for(published.wait(), 30)
    conn = await connect(settings.require_database_url(), schema="probe")
    try:
        head = await conn.fetchval("SELECT max(position) FROM events")
        checkpoint = await conn.fetchval("SELECT position FROM checkpoints WHERE name = 'relay'")
    finally:
        await conn.close()
    assert head is not None and checkpoint == head


@pytest.mark.asyncio
@pytest.mark.parametrize("crash_at", ["relay.before_publish", "relay.after_publish"])
async def test_the_relay_killed_mid_round_loses_nothing(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path, crash_at: str
) -> None:
    """SIGKILL between commit and publish, or between publish and checkpoint: after a restart
    every event is on Kafka at least once, none is missing, and the consuming side (the tally
    consumer) applies each exactly once."""
    await kafka.create(probe.COMMANDS, probe.EVENTS)
    total = 40
    for i in range(total):
        await kafka.publish(probe.COMMANDS, probe.command(f"x-{i}", f"c{i % 5}"), key=f"c{i % 5}")

    port = free_port()
    process = ServiceProcess(
        "tests.support.probe", settings, port, tmp_path / "probe.log", {"PROBE_PORT": str(port)}
    )
    process.start(DESK_CRASH_AT=crash_at)
    assert await process.wait_exit(60) == -9, process.logs()[-2000:]

    conn = await connect(settings.require_database_url(), schema="probe")
    try:
        stored_before = await conn.fetchval("SELECT count(*) FROM events")
        assert stored_before > 0, "events were committed before the crash"
        published_before = len(await kafka.all_records(probe.EVENTS, settle=0.5))
        if crash_at == "relay.before_publish":
            assert published_before == 0
        else:
            assert published_before > 0

        process.start()
        await process.wait_ready()
        published = await kafka.await_records(probe.EVENTS, lambda r: True, count=total)
        stored = {str(r["event_id"]) for r in await conn.fetch("SELECT event_id FROM events")}
        ids = event_ids(published)
        assert set(ids) == stored and len(stored) == total, "every event published, none missing"
        if crash_at == "relay.after_publish":
            assert len(ids) > len(set(ids)), "the unacknowledged round was published again"

        async def applied() -> int:
            return int(await conn.fetchval("SELECT count(*) FROM applied"))

        await eventually(applied, lambda n: n >= total, timeout=60)
        await kafka.all_records(probe.EVENTS)
        assert await applied() == total
        assert await conn.fetchval("SELECT count(DISTINCT message_id) FROM applied") == total
    finally:
        await conn.close()
        await process.stop()


@pytest.mark.asyncio
async def test_replay_refuses_to_skip_events_the_relay_never_published(
    settings: Settings,
) -> None:
    service = probe.build(settings, port=0, tally=False)
    conn = await connect(settings.require_database_url())
    try:
        await migrate(conn, "probe", service.migrations)
        for n in range(3):
            pending = PendingEvent(
                probe.CounterBumped(counter="c", amount=n), datetime.now(UTC), "c"
            )
            await service.store.append(conn, "counter-c", None, [pending])
        await conn.execute("INSERT INTO probe.checkpoints (name, position) VALUES ('relay', 1)")

        with pytest.raises(ReplayRefused, match="never published"):
            await replay(conn, "probe", 3)
        with pytest.raises(ReplayRefused, match="past the end"):
            await replay(conn, "probe", 4, skip_unpublished=True)
        assert await conn.fetchval("SELECT position FROM probe.checkpoints") == 1
        assert await replay(conn, "probe", 3, skip_unpublished=True) == 0
        assert await replay(conn, "probe", 0) == 3
    finally:
        await conn.close()


def _sample(name: str, **labels: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


async def _append(
    service: Service, counter: str, store: EventStore | None = None, stream: str = ""
) -> None:
    """An event committed in the probe's store without going through a consumer."""
    async with service.pool.acquire() as conn, conn.transaction():
        uow = UnitOfWork(conn, store or service.store, await service.clock.now(conn))
        uow.caused_by(Cause("c"))(
            stream or f"counter-{counter}",
            [probe.CounterBumped(counter=counter, amount=1)],
            expected_version=ANY_VERSION,
        )
        await uow.flush()


@pytest.mark.asyncio
async def test_the_relay_outlives_a_broker_outage_and_is_reported_down_meanwhile(
    make_settings: SettingsFactory,
) -> None:
    """The broker stops answering (SIGSTOP of a broker of this test's own): the relay's publish
    fails with a KafkaError, the relay is restarted with backoff, ``/ready`` names it and the
    metrics count it; when the broker answers again the event goes out."""
    broker = EmbeddedBroker()
    bootstrap = broker.start()
    settings = make_settings(
        kafka_bootstrap_servers=bootstrap,
        kafka_request_timeout_ms=1500,
        task_restart_backoff="200ms",
        task_restart_backoff_max="1s",
    )
    kafka = KafkaProbe(settings)
    try:
        service = probe.build(settings, port=0, tally=False)
        async with running(service):
            await _append(service, "before")
            await kafka.await_records(probe.EVENTS, lambda r: r.key == b"counter-before")
            restarts = _sample("desk_task_restarts_total", service="probe", task="relay") or 0
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                await _append(service, "during")
                down = await eventually(
                    service.readiness, lambda checks: not checks["relay"], timeout=30
                )
                assert _sample("desk_task_up", service="probe", task="relay") == 0
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            await eventually(service.readiness, lambda checks: all(checks.values()), timeout=60)
            await kafka.await_records(probe.EVENTS, lambda r: r.key == b"counter-during")
        assert down["relay"] is False
        assert (_sample("desk_task_restarts_total", service="probe", task="relay") or 0) > restarts
    finally:
        await kafka.close()
        broker.stop()


@pytest.mark.asyncio
async def test_an_event_the_broker_will_not_take_is_refused_at_append(settings: Settings) -> None:
    service = probe.build(settings.replace(kafka_max_message_bytes=64 * 1024), port=0)
    async with running(service):
        with pytest.raises(EventTooLarge):
            await _append(service, "x" * (64 * 1024))
        assert await service.pool.fetchval("SELECT count(*) FROM events") == 0


@pytest.mark.asyncio
async def test_a_stored_event_the_broker_refuses_stops_the_relay_loudly_not_silently(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """An event stored under a larger limit than the one in force now (or refused by the broker
    for any other lasting reason) is not skipped — the log keeps its order — but the relay is
    reported down, the position it is stuck at is a metric, and each attempt logs why. The
    operator's action (raise the limit to what the broker takes) lets it through, in order."""
    small = settings.replace(kafka_max_message_bytes=64 * 1024, task_restart_backoff="100ms")
    service = probe.build(small, port=0, tally=False)
    async with running(service):
        stored_under_a_larger_limit = EventStore("probe", "servicedesk/probe")
        big = "x" * (100 * 1024)
        await _append(service, big, stored_under_a_larger_limit, stream="counter-s")
        await _append(service, "after", stream="counter-s")
        checks = await eventually(service.readiness, lambda c: not c["relay"], timeout=30)
        blocked = await eventually(
            lambda: _async(_sample("desk_relay_blocked_position", service="probe")),
            lambda position: position == 1,
        )
        published = await kafka.all_records(probe.EVENTS, settle=1.0)
    assert published == [], "nothing after the refused event either: order is kept"
    assert checks["relay"] is False and blocked == 1
    fixed = probe.build(settings, port=0, tally=False)
    async with running(fixed):
        records = await kafka.await_records(probe.EVENTS, lambda r: True, count=2)
        await eventually(
            lambda: _async(_sample("desk_relay_blocked_position", service="probe")),
            lambda position: position == 0,
        )
    assert [json.loads(r.value)["data"]["counter"][:5] for r in records] == ["xxxxx", "after"]


async def _async(value: float | None) -> float | None:
    return value


@pytest.mark.asyncio
async def test_a_mark_follows_what_was_published_and_never_passes_an_open_transaction(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """A relay's mark says every event stamped before it is on its topic: so it comes after
    the events (acknowledged), goes on while the relay is idle, and stays before the start of
    a transaction of the service still open (it may append an event stamped then), passing it
    once that commits."""
    own = settings.replace(relay_mark_interval="50ms")
    marks = RelayMarks(own, own.topic("probe.marks"), "probe")
    service = probe.build(own, port=0, tally=False, marks="probe.marks")
    try:
        async with running(service):
            await kafka.publish(probe.COMMANDS, probe.command("m-1", "m"), key="m")
            [record] = await kafka.await_records(probe.EVENTS, lambda r: r.key == b"counter-m")
            stamped = datetime.fromisoformat(record.header("ce_time") or "")
            await eventually(lambda: _past(marks, stamped), what="a mark past the event")

            # One of the service's own connections (its role), as an append's would be.
            async with service.pool.acquire() as conn:
                async with conn.transaction():
                    opened = await conn.fetchval("SELECT now()")  # the transaction's start
                    await conn.execute("SELECT pg_sleep(0.1)")  # its last statement is later
                    published = await _marks_published(marks)
                    await eventually(
                        lambda: _more_marks(marks, published + 3), what="marks while it is open"
                    )
                    held = await marks.latest()
                    assert held is not None and held <= opened
                await eventually(lambda: _past(marks, opened), what="a mark past it once done")
    finally:
        await marks.close()


async def _past(marks: RelayMarks, moment: datetime) -> bool:
    through = await marks.latest()
    return through is not None and through > moment


async def _marks_published(marks: RelayMarks) -> int:
    await marks.latest()
    return marks._next


async def _more_marks(marks: RelayMarks, count: int) -> bool:
    return await _marks_published(marks) >= count


@pytest.mark.asyncio
async def test_a_mark_not_sealed_by_its_relay_is_ignored(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """Anyone able to write the topic could otherwise make every timer fire early."""
    moment = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    marks = RelayMarks(settings, settings.topic("dispatch.marks"), "dispatch")
    try:
        await publish_mark(kafka, moment)
        assert await marks.latest() == moment
        later = moment + timedelta(hours=1)
        value, headers = mark_record("dispatch", None, later)
        await kafka.publish("dispatch.marks", value, key="dispatch", partition=0)  # unsealed
        intake = KeyRing.from_settings(settings).signing_key("intake")
        value, headers = mark_record("dispatch", intake, later)  # another service's seal
        await kafka.publish("dispatch.marks", value, headers=headers, partition=0)
        assert await marks.latest() == moment
        key = KeyRing.from_settings(settings).signing_key("dispatch")
        assert key is not None
        for says in (b"not json", b"[[[]]]", b'{"through": "2100-01-01T00:00:00"}', b"{}"):
            await kafka.publish("dispatch.marks", says, headers=seal(key, says), partition=0)
        assert await marks.latest() == moment  # sealed, but no time (or one without a zone)
        await publish_mark(kafka, moment - timedelta(minutes=1))  # an older one says less
        assert await marks.latest() == moment
        await publish_mark(kafka, later)
        assert await marks.latest() == later
    finally:
        await marks.close()


MARKS = "probe.marks"


@dataclass
class MarksWorld:
    """The probe's store (migrated), a producer for its relays, and a reader of its marks."""

    settings: Settings
    service: Service
    conn: asyncpg.Connection
    producer: AIOKafkaProducer
    marks: RelayMarks

    def relay(self, url: str | None = None, **options: Any) -> Relay:
        """The probe's relay, publishing a mark whenever a round allows one."""
        return Relay(
            service="probe",
            database_url=url or self.settings.require_database_url(),
            schema="probe",
            producer=self.producer,
            route=lambda _: self.settings.topic(probe.EVENTS),
            key=KeyRing.from_settings(self.settings).signing_key("probe"),
            marks_topic=self.settings.topic(MARKS),
            mark_interval=timedelta(0),
            **options,
        )

    async def append(self, count: int = 1) -> None:
        for n in range(count):
            pending = PendingEvent(
                probe.CounterBumped(counter="c", amount=n), datetime.now(UTC), "c"
            )
            await self.service.store.append(self.conn, "counter-c", None, [pending])


@contextlib.asynccontextmanager
async def marks_world(settings: Settings, kafka: KafkaProbe) -> AsyncIterator[MarksWorld]:
    await kafka.create(probe.EVENTS, MARKS)
    service = probe.build(settings, port=0, tally=False)
    conn = await connect(settings.require_database_url(), schema="probe")
    producer = make_producer(settings, client_id="test-relay")
    marks = RelayMarks(settings, settings.topic(MARKS), "probe")
    try:
        await migrate(conn, "probe", service.migrations)
        await producer.start()
        yield MarksWorld(settings, service, conn, producer, marks)
    finally:
        await marks.close()
        await producer.stop()
        await conn.close()


@pytest.mark.asyncio
async def test_a_round_that_reads_a_full_batch_publishes_no_mark(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """A full batch may have left events behind it in the log: a mark after it would say they
    are published. Only the round that reads to the log's end may publish one."""
    async with marks_world(settings, kafka) as world:
        await world.append(5)
        conn = world.conn
        await conn.execute("INSERT INTO checkpoints (name, position) VALUES ('relay', 0)")
        last = await conn.fetchval("SELECT max(occurred_at) FROM events")
        relay = world.relay(batch_size=2)

        assert [await relay.publish_pending(conn) for _ in range(2)] == [2, 2]
        assert await world.marks.latest() is None, "two full rounds, one event left: no mark"
        assert await relay.publish_pending(conn) == 1
        through = await world.marks.latest()
        assert through is not None and through > last


@pytest.mark.asyncio
async def test_without_track_activities_the_relay_publishes_events_but_no_mark(
    settings: Settings, kafka: KafkaProbe, infrastructure: SessionInfrastructure
) -> None:
    """Open transactions are invisible then, so no mark could be trusted: the timers waiting
    for marks wait (and say so) rather than fire early; the events go on."""
    async with marks_world(settings, kafka) as world:
        # Only a superuser may turn it off: the relay connects as one here, with it off.
        url = settings.require_database_url()
        admin = with_database(infrastructure.admin_database_url, urlsplit(url).path.lstrip("/"))
        relay = world.relay(f"{admin}{'&' if '?' in admin else '?'}track_activities=off")
        running_relay = asyncio.create_task(relay.run())
        try:
            await world.append()
            await kafka.await_records(probe.EVENTS, lambda r: r.key == b"counter-c")
            await asyncio.sleep(0.3)  # rounds go on, a mark due at each
            assert await world.marks.latest() is None
        finally:
            running_relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running_relay


@pytest.mark.asyncio
async def test_under_a_driven_clock_a_mark_is_the_clocks_reading_taken_while_nothing_is_open(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """Tests drive the clock: a mark is then its reading, but not while another transaction of
    the service is open (it may append an event stamped with that reading)."""
    async with marks_world(settings, kafka) as world:
        conn, marks = world.conn, world.marks
        await conn.execute("INSERT INTO checkpoints (name, position) VALUES ('relay', 0)")
        relay = world.relay(driven_clock=True)
        first = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        await conn.execute("INSERT INTO desk_clock (value) VALUES ($1)", first)
        await relay.publish_pending(conn)
        assert await marks.latest() == first

        later = first + timedelta(minutes=5)
        await conn.execute("UPDATE desk_clock SET value = $1", later)
        other = await connect(settings.require_database_url())  # the service's role too
        try:
            async with other.transaction():
                await other.execute("SELECT 1")
                for _ in range(3):
                    await relay.publish_pending(conn)
                assert await marks.latest() == first, "no mark while a transaction is open"
        finally:
            await other.close()
        await relay.publish_pending(conn)
        assert await marks.latest() == later

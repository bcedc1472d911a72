"""Event store, relay and consumer throughput in one run.

    python -m bench.eventstore [--single N] [--batched N] [--batch-size N]

Prints ``append_single_events_per_s`` (8 writers, one event per transaction),
``append_batched_events_per_s`` (two writers, ``--batch-size`` events per transaction across 100
streams), ``relay_events_per_s`` (store -> Kafka, acknowledged, checkpointed) and
``consume_batched_events_per_s`` (Kafka -> exactly-once consumer: claim the batch, apply it to a
read model in one statement, commit, commit offsets) and ``consume_and_append_events_per_s`` (the
same, but the handler records an event per message, which the service's relay then publishes).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from bench._support import Stopwatch, bench_settings, report
from shared.consumer import Delivered, EventSubscription, Inbound
from shared.database import connect
from shared.events import EventData, event
from shared.eventstore import ANY_VERSION, EventStore, PendingEvent, StreamAppend
from shared.kafka import ensure_topics, make_producer
from shared.keys import KeyRing
from shared.migrations import kernel_migrations, migrate
from shared.provenance import use_catalogue
from shared.relay import Relay
from shared.service import Service
from shared.settings import Settings
from shared.unit_of_work import UnitOfWork

SCHEMA = "bench"
TOPIC = "bench.events"


@event("bench.ticket.touched", version=1)
class Touched(EventData):
    ticket: str
    note: str


@event("bench.ticket.seen", version=1)
class Seen(EventData):
    ticket: str


def pending(i: int) -> PendingEvent:
    return PendingEvent(
        Touched(ticket=f"t-{i % 100}", note="printer on floor 3 is jammed again"),
        datetime.now(UTC),
        correlation_id=f"c-{i}",
        subject=f"t-{i % 100}",
    )


async def append_single(settings: Settings, store: EventStore, total: int, writers: int) -> float:
    conns = [await connect(settings.require_database_url()) for _ in range(writers)]
    events = [pending(i) for i in range(total)]

    async def write(w: int) -> None:
        for i in range(w, total, writers):
            await store.append(conns[w], f"single-{i % 500}", ANY_VERSION, [events[i]])

    try:
        with Stopwatch() as watch:
            await asyncio.gather(*(write(w) for w in range(writers)))
    finally:
        for c in conns:
            await c.close()
    return watch.rate(total)


async def append_batched(
    settings: Settings, store: EventStore, total: int, size: int, writers: int
) -> float:
    conns = [await connect(settings.require_database_url()) for _ in range(writers)]
    batches = []
    for start in range(0, total, size):
        streams: dict[str, list[PendingEvent]] = {}
        for i in range(start, min(total, start + size)):
            streams.setdefault(f"batched-{i % 100}", []).append(pending(i))
        batches.append([StreamAppend(s, ANY_VERSION, evs) for s, evs in streams.items()])

    async def write(w: int) -> None:
        for batch in batches[w::writers]:
            await store.append_many(conns[w], batch)

    try:
        with Stopwatch() as watch:
            await asyncio.gather(*(write(w) for w in range(writers)))
    finally:
        for c in conns:
            await c.close()
    return watch.rate(total)


async def relay_all(settings: Settings, head: int) -> float:
    producer = make_producer(settings, client_id="bench-relay", max_batch_size=256 * 1024)
    await producer.start()
    relay = Relay(
        service=SCHEMA,
        database_url=settings.require_database_url(),
        schema=SCHEMA,
        producer=producer,
        route=lambda _: settings.topic(TOPIC),
        key=KeyRing.from_settings(settings).signing_key(SCHEMA),
        batch_size=settings.relay_batch_size,
    )
    conn = await connect(settings.require_database_url(), schema=SCHEMA)
    try:
        await conn.execute("INSERT INTO checkpoints (name, position) VALUES ('relay', 0)")
        published = 0
        with Stopwatch() as watch:
            while published < head:
                published += await relay.publish_pending(conn)
    finally:
        await conn.close()
        await producer.stop()
    return watch.rate(published)


class Counter(EventSubscription):
    """Applies each event to a read-model row (one statement per batch): a projection's work."""

    name = "counter"
    topics = (TOPIC,)
    accepts = ("bench.ticket.touched",)

    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[Delivered]]) -> None:
        tickets = [m.message.data.ticket for m in messages]  # type: ignore[attr-defined]
        await uow.conn.execute(
            "INSERT INTO touches (ticket, count) SELECT t, count(*) FROM unnest($1::text[]) t "
            "GROUP BY t ON CONFLICT (ticket) DO UPDATE SET count = touches.count + excluded.count",
            tickets,
        )


class Observer(EventSubscription):
    """Records one event of its own per event consumed, as dispatch and sla do."""

    name = "observer"
    topics = (TOPIC,)
    accepts = ("bench.ticket.touched",)

    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[Delivered]]) -> None:
        for m in messages:
            data = m.message.data
            assert isinstance(data, Touched)
            uow.caused_by(m.message.envelope)(
                f"seen-{data.ticket}",
                [Seen(ticket=data.ticket)],
                expected_version=ANY_VERSION,
                subject=data.ticket,
            )


async def consume_all(settings: Settings, total: int, subscription: EventSubscription) -> float:
    """Time for a fresh consumer group to apply every event on the topic."""
    service = Service(
        f"bench_{subscription.name}",
        settings,
        description="benchmark consumer",
        publishes={f"bench.{subscription.name}.events": [Seen]},
        subscriptions=[subscription],
        port=0,
    )
    conn = await connect(settings.require_database_url())
    await migrate(conn, service.name, service.migrations)  # as `desk migrate` would
    await conn.close()
    await service.app.start()
    try:
        await service.pool.execute(
            "CREATE TABLE IF NOT EXISTS touches (ticket text PRIMARY KEY, count integer NOT NULL)"
        )
        with Stopwatch() as watch:
            while True:
                done = await service.pool.fetchval("SELECT count(*) FROM processed_messages")
                if done >= total:
                    break
                await asyncio.sleep(0.02)
    finally:
        await service.app.stop()
    return watch.rate(total)


async def main(single: int, batched: int, batch_size: int) -> None:
    # One consumer per subscription: with two, the embedded broker's rebalance when the second
    # joins (seconds) lands inside the measured window and the figure measures the rebalance.
    # The bench's own store publishes Touched; its consumers check that against the catalogue.
    use_catalogue(lambda: {Touched.event_type(): SCHEMA})
    consumers = KeyRing.generate({"bench_counter": ["system"], "bench_observer": ["system"]})
    async with bench_settings(
        relay_batch_size=5000,
        consumer_batch_size=1000,
        consumer_concurrency=1,
        keys=consumers.dump(),
    ) as settings:
        await ensure_topics(settings, [settings.topic(TOPIC)])
        conn = await connect(settings.require_database_url())
        await migrate(conn, SCHEMA, kernel_migrations())
        await conn.close()
        store = EventStore(SCHEMA, "servicedesk/bench")

        single_rate = await append_single(settings, store, single, writers=8)
        batched_rate = await append_batched(settings, store, batched, batch_size, writers=2)
        head = single + batched
        relay_rate = await relay_all(settings, head)
        consume_rate = await consume_all(settings, head, Counter())
        consume_append_rate = await consume_all(settings, head, Observer())
    report(
        {
            "append_single_events_per_s": single_rate,
            "append_batched_events_per_s": batched_rate,
            "relay_events_per_s": relay_rate,
            "consume_batched_events_per_s": consume_rate,
            "consume_and_append_events_per_s": consume_append_rate,
            "events": head,
            "batch_size": batch_size,
            "single_writers": 8,
            "batched_writers": 2,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--single", type=int, default=5_000)
    parser.add_argument("--batched", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.single, args.batched, args.batch_size))

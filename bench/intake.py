"""intake throughput and latency: request published -> triaged event on Kafka, intake alone.

    python -m bench.intake [--requests 30000] [--steady-rate 2000] [--steady-seconds 10]
                           [--clear | --compare ROUNDS]

intake runs as its own process (as in production). Phase 1 publishes ``--requests`` requests as
fast as the producer can and measures how fast triaged events come out: ``requests_per_s``.
Phase 2 offers a steady ``--steady-rate`` and measures each request's latency from publish to
its triaged event: ``p50_ms``, ``p99_ms`` (with the offered rate, since latency means nothing
without it).

It also prints ``cpu_ms_per_request``: the CPU each part of the machine spent per request during
the burst (the intake processes, PostgreSQL, the broker, this benchmark's publisher and watcher)
and the share of the machine left idle — what bounds the figure on a shared machine.

``--clear`` runs the same intake with its customers' personal fields left in clear and no key
store consulted (:mod:`bench.clear_intake`). ``--compare ROUNDS`` prices sealing: the two
variants side by side on the same servers, ``--requests`` shared out over ROUNDS rounds in which
both are handed the same requests at once; ``sealing_cpu_pct`` is what sealing adds to intake's
CPU per request over all rounds, with each round's beside it (see :func:`compare` for why not
one run after another).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from bench._support import (
    CpuMeter,
    Variant,
    Watcher,
    bench_world,
    beside,
    bounds,
    report,
    sealing_cost,
    side_by_side,
    start_service,
)
from services.intake.contract import INCOMING_TOPIC as INCOMING
from services.intake.demo import DemoTraffic
from services.intake.events import EVENTS_TOPIC as EVENTS
from services.intake.events import TicketReceived, TicketTriaged
from shared.kafka import ensure_topics, make_producer
from shared.local.ports import free_port
from shared.settings import Settings

TRIAGED = TicketTriaged.event_type()


def requests(count: int, run: str) -> list[tuple[str, bytes]]:
    traffic = DemoTraffic(seed=42, run=run)
    out: list[tuple[str, bytes]] = []
    while len(out) < count:
        request = traffic.request()
        request["channel_message_id"] = f"bench-{run}-{len(out)}"
        out.append(
            (request["channel_message_id"], json.dumps(request, ensure_ascii=False).encode())
        )
    return out


async def run(
    total: int, steady_rate: float, steady_seconds: float, instances: int, clear: bool
) -> dict[str, Any]:
    """One run in a world of its own: the burst, then the steady phase."""
    async with bench_world(intake_port=free_port()) as (settings, infrastructure):
        await ensure_topics(settings, [settings.topic(t) for t in (INCOMING, EVENTS)])
        intakes = [
            await start_service(
                "intake",
                settings.replace(intake_port=free_port()),
                module="bench.clear_intake" if clear else None,
            )
            for _ in range(instances)
        ]
        watcher = Watcher(settings, EVENTS, TRIAGED)
        producer = make_producer(settings, client_id="bench-adapter", max_batch_size=512 * 1024)
        await producer.start()
        try:
            await watcher.start()
            # Warm up: the consumer group, the pools, the caches.
            await publish_all(producer, settings, requests(500, "warm"))
            await watcher.wait_for(500, 120)

            burst = requests(total, "burst")
            meter = CpuMeter([intake.pid for intake in intakes], infrastructure)
            meter.start()
            started = time.perf_counter()
            await publish_all(producer, settings, burst)
            published = time.perf_counter()
            await watcher.wait_for(500 + total, 600)
            finished = max(watcher.arrived.values())
            throughput = total / (finished - started)
            cpu = meter.stop(total)

            latencies = await steady(producer, settings, watcher, steady_rate, steady_seconds)
            sealed = await sealed_share(settings)
        finally:
            await watcher.stop()
            await producer.stop()
            for intake in intakes:
                intake.terminate()
                await intake.wait()
    return {
        "requests_per_s": round(throughput, 1),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(statistics.quantiles(latencies, n=100)[98], 1),
        "steady_offered_per_s": steady_rate,
        "steady_requests": len(latencies),
        "burst_requests": total,
        "burst_publish_s": round(published - started, 2),
        "intake_processes": instances,
        "personal_fields": "clear" if clear else "sealed",
        "receipts_sealed_share": sealed,
        # Where the cores went during the burst: CPU ms per request by process role.
        "cpu_ms_per_request": cpu,
    }


async def compare(rounds: int, size: int) -> dict[str, Any]:
    """What sealing costs intake, the two side by side: intake as it runs and
    :mod:`bench.clear_intake`'s variant, each with a database and topics of its own on the same
    servers, handed the same demo requests round after round, ``size`` each, published together.
    Runs one after another could not price it: this machine's speed wanders by up to 2x within
    seconds, and whole runs a minute apart differed by more than sealing costs (pairs from -14
    to +45 %). Side by side, both meet the same moment; a round's CPU is each process's from the
    round's publishing until its last triaged event."""
    async with (
        bench_world(intake_port=free_port()) as (sealed_settings, infrastructure),
        beside(sealed_settings, infrastructure, intake_port=free_port()) as clear_settings,
    ):
        worlds = {"sealed": sealed_settings, "clear": clear_settings}
        for settings in worlds.values():
            await ensure_topics(settings, [settings.topic(t) for t in (INCOMING, EVENTS)])
        intakes = {
            "sealed": await start_service("intake", sealed_settings),
            "clear": await start_service("intake", clear_settings, module="bench.clear_intake"),
        }
        watchers = {mode: Watcher(settings, EVENTS, TRIAGED) for mode, settings in worlds.items()}
        producer = make_producer(
            sealed_settings, client_id="bench-adapter", max_batch_size=512 * 1024
        )
        await producer.start()
        given = requests(WARM_UP + rounds * size, "compare")
        cpu: dict[str, list[float]] = {"clear": [], "sealed": []}
        try:
            for watcher in watchers.values():
                await watcher.start()
            for n, (first, last) in enumerate(bounds(rounds, size, WARM_UP)):
                order = sorted(worlds, reverse=n % 2 == 1)  # who goes first
                given_now = given[first:last]
                spent = await side_by_side(
                    {
                        m: round_of(producer, intakes[m], worlds[m], watchers[m], given_now)
                        for m in order
                    },
                    infrastructure,
                    last - first,
                )
                if n:  # the first hands out the warm-up
                    for mode, ms in spent.items():
                        cpu[mode].append(ms)
            shares = {mode: await sealed_share(settings) for mode, settings in worlds.items()}
        finally:
            for watcher in watchers.values():
                await watcher.stop()
            await producer.stop()
            for intake in intakes.values():
                intake.terminate()
                await intake.wait()
    if shares != {"sealed": 1.0, "clear": 0.0}:
        raise RuntimeError(f"a variant measured something else: receipts sealed {shares}")
    return {
        "rounds": rounds,
        "requests_a_round": size,
        **sealing_cost(cpu, "request"),
        "receipts_sealed_share": shares,
    }


WARM_UP = 500
"""Requests each variant is handed before anything is measured: the consumer group, the pools,
the caches."""


def round_of(
    producer: AIOKafkaProducer,
    process: asyncio.subprocess.Process,
    settings: Settings,
    watcher: Watcher,
    batch: list[tuple[str, bytes]],
) -> Variant:
    """``batch`` for one variant side by side: published to its topic, done at its last triaged
    event."""
    expected = len(watcher.arrived) + len(batch)
    return (
        process.pid,
        lambda: publish_all(producer, settings, batch),
        lambda: watcher.wait_for(expected, 600),
    )


async def publish_all(
    producer: AIOKafkaProducer, settings: Settings, batch: list[tuple[str, bytes]]
) -> None:
    topic = settings.topic(INCOMING)
    sends = [await producer.send(topic, value=v, key=k.encode()) for k, v in batch]
    await asyncio.gather(*sends)


async def steady(
    producer: AIOKafkaProducer,
    settings: Settings,
    watcher: Watcher,
    rate: float,
    seconds: float,
) -> list[float]:
    """Offer ``rate`` requests/s for ``seconds``; latency of each, publish to triaged, in ms."""
    topic = settings.topic(INCOMING)
    batch = requests(int(rate * seconds), "steady")
    sent_at: dict[str, float] = {}
    expected = len(watcher.arrived) + len(batch)
    started = time.perf_counter()
    for n, (key, value) in enumerate(batch):
        due = started + n / rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        sent_at[key] = time.perf_counter()
        await producer.send(topic, value=value, key=key.encode())
    await watcher.wait_for(expected, 300)
    # Map triaged events back to requests through intake's ticket index.
    conn = await asyncpg.connect(settings.require_database_url())
    try:
        rows = await conn.fetch(
            "SELECT channel_message_id, number FROM intake.tickets "
            "WHERE channel_message_id = ANY($1::text[])",
            list(sent_at),
        )
    finally:
        await conn.close()
    return [(watcher.arrived[r["number"]] - sent_at[r["channel_message_id"]]) * 1000 for r in rows]


async def sealed_share(settings: Settings) -> float:
    """The share of recorded receipts whose personal fields are sealed: 1 for intake, 0 for
    ``--clear`` (a check that the run measured what it says)."""
    conn = await asyncpg.connect(settings.require_database_url())
    try:
        share = await conn.fetchval(
            "SELECT avg((envelope->'data'->'description'->>'ct' IS NOT NULL)::int) "
            "FROM intake.events WHERE type = $1",
            TicketReceived.event_type(),
        )
    finally:
        await conn.close()
    return round(float(share), 3)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--steady-rate", type=float, default=2000)
    parser.add_argument("--steady-seconds", type=float, default=10)
    parser.add_argument("--instances", type=int, default=1, help="intake processes")
    parser.add_argument(
        "--clear",
        action="store_true",
        help="intake as before sealing: personal fields in clear, no key store (what sealing "
        "costs is the difference from a run without it)",
    )
    parser.add_argument(
        "--compare",
        type=int,
        metavar="ROUNDS",
        help="intake in clear and sealed side by side, --requests shared out over ROUNDS: what "
        "sealing costs (no steady phase)",
    )
    args = parser.parse_args()
    options = (args.requests, args.steady_rate, args.steady_seconds, args.instances)
    if args.compare:
        report(asyncio.run(compare(args.compare, args.requests // args.compare)))
    else:
        report(asyncio.run(run(*options, args.clear)))

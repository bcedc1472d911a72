"""intake throughput and latency: request published -> triaged event on Kafka, intake alone.

    python -m bench.intake [--requests 30000] [--steady-rate 2000] [--steady-seconds 10]
                           [--clear | --compare PAIRS]

intake runs as its own process (as in production). Phase 1 publishes ``--requests`` requests as
fast as the producer can and measures how fast triaged events come out: ``requests_per_s``.
Phase 2 offers a steady ``--steady-rate`` and measures each request's latency from publish to
its triaged event: ``p50_ms``, ``p99_ms`` (with the offered rate, since latency means nothing
without it).

It also prints ``cpu_ms_per_request``: the CPU each part of the machine spent per request during
the burst (the intake processes, PostgreSQL, the broker, this benchmark's publisher and watcher)
and the share of the machine left idle — what bounds the figure on a shared machine.

``--clear`` runs the same intake with its customers' personal fields left in clear and no key
store consulted (:mod:`bench.clear_intake`): the cost of sealing is the difference between runs
with and without it, alternated, for one run differs from the next by up to a fifth here.
``--compare PAIRS`` does that: PAIRS runs of each, alternated, and the medians' ratio.
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

from bench._support import CpuMeter, Watcher, bench_world, report, start_service
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


async def compare(
    pairs: int, total: int, steady_rate: float, steady_seconds: float, instances: int
) -> dict[str, Any]:
    """What sealing costs intake: ``pairs`` runs with personal fields in clear and as many
    sealed, alternated (clear first in one pair, sealed first in the next, so a machine that
    drifts weighs on both alike). One run differs from the next by up to a fifth here, so the
    figure is the medians' ratio, with every run's beside it."""
    cpu: dict[str, list[float]] = {"clear": [], "sealed": []}
    rates: dict[str, list[float]] = {"clear": [], "sealed": []}
    for pair in range(pairs):
        for clear in (True, False) if pair % 2 == 0 else (False, True):
            one = await run(total, steady_rate, steady_seconds, instances, clear)
            if one["receipts_sealed_share"] != (0.0 if clear else 1.0):
                raise RuntimeError(f"a {one['personal_fields']} run measured something else")
            cpu[one["personal_fields"]].append(one["cpu_ms_per_request"]["service"])
            rates[one["personal_fields"]].append(one["requests_per_s"])
    median = {mode: statistics.median(runs) for mode, runs in cpu.items()}
    if not median["clear"]:
        # The kernel counts CPU in 10 ms ticks: a burst that short measures nothing.
        raise SystemExit(f"a burst of {total} requests is too short to measure: raise --requests")
    return {
        "pairs": pairs,
        "burst_requests": total,
        "service_cpu_ms_per_request": cpu,
        "median_service_cpu_ms_per_request": median,
        "sealing_cpu_pct": round(100 * (median["sealed"] / median["clear"] - 1), 1),
        "pair_sealing_cpu_pct": [
            round(100 * (s / c - 1), 1) for c, s in zip(cpu["clear"], cpu["sealed"], strict=True)
        ],
        "requests_per_s": rates,
    }


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
        metavar="PAIRS",
        help="runs in clear and sealed, alternated, PAIRS of each: what sealing costs",
    )
    args = parser.parse_args()
    options = (args.requests, args.steady_rate, args.steady_seconds, args.instances)
    if args.compare:
        report(asyncio.run(compare(args.compare, *options)))
    else:
        report(asyncio.run(run(*options, args.clear)))

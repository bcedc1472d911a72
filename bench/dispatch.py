"""dispatch throughput and latency: triaged event -> assigned event on Kafka, dispatch alone.

    python -m bench.dispatch [--tickets 20000] [--steady-rate 500] [--steady-seconds 10]

dispatch runs as its own process with the shipped policy, every agent's capacity raised so that
every ticket is assigned (a full group would queue it, which is not what this measures). Phase 1
publishes ``--tickets`` triaged events (as intake's relay would) as fast as it can and measures
how fast assigned events come out: ``tickets_per_s``, and the CPU each process spent per ticket
during that burst (``cpu_ms_per_ticket``: dispatch, PostgreSQL, the broker, the benchmark), which
says more than a rate on a machine shared with other work. Phase 2 offers a steady
``--steady-rate`` and measures each ticket's latency from publish to its assigned event:
``p50_ms``, ``p99_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from aiokafka import AIOKafkaProducer

from bench._support import (
    CpuMeter,
    Watcher,
    bench_world,
    publish,
    report,
    sealed,
    start_service,
    written_policy,
)
from services.intake.events import TicketTriaged, ticket_stream
from services.policy import DEFAULT_POLICY
from shared.events import new_event_id
from shared.eventstore import EventStore, PendingEvent, with_version
from shared.kafka import ensure_topics, make_producer
from shared.local.ports import free_port
from shared.settings import Settings

INTAKE_EVENTS, EVENTS = "intake.events", "dispatch.events"
ASSIGNED = "servicedesk.ticket.assigned.v1"
_SHAPES = [  # (complexity, category, severity, product line, problem type, language)
    ("simple", "inquiry", "none", None, "inquiry", "zh"),
    ("simple", "inquiry", "none", None, None, "en"),
    ("general", "fault", "none", "pc", "hardware", "zh"),
    ("general", "fault", "none", "printer", None, "zh"),
    ("general", "fault", "none", "erp", "software", "en"),
    ("general", "fault", "none", "fax", None, "zh"),
    ("complex", "problem", "none", "erp", "integration", "en"),
    ("general", "complaint", "ordinary", None, None, "zh"),
    ("complex", "complaint", "major", None, "complaint", "zh"),
]


def bench_policy() -> Path:
    """The shipped policy, with room for every ticket."""
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    for agent in policy["directory"]["agents"]:
        agent["capacity"] = 100_000
    return written_policy(policy)


def triaged_events(count: int, run: str) -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
    """(key, value, headers) of ``count`` triaged events, like intake's relay publishes."""
    rng = random.Random(7)
    store = EventStore("intake", "servicedesk/intake")
    now = datetime.now(UTC)
    out = []
    for n in range(count):
        complexity, category, severity, line, problem, language = rng.choice(_SHAPES)
        ticket_id = str(new_event_id())
        data = TicketTriaged(
            ticket_id=ticket_id,
            number=f"{run}-{n:07d}",
            complexity=complexity,
            category=category,
            complaint=severity != "none",
            complaint_severity=severity,
            rule="bench",
            matched=[],
            reason="bench",
            policy_version="bench",
            channel="email",
            priority=rng.choice(["low", "normal", "normal", "high", "urgent"]),
            language=language,
            product_line=line,
            problem_type=problem,
            subject="bench ticket",
            received_at=now + timedelta(milliseconds=n),
        )
        stream = ticket_stream(ticket_id)
        pending = PendingEvent(data, now, correlation_id=ticket_id, subject=ticket_id)
        value = with_version(store._envelope_json(stream, pending, data.event_type()), 2)
        headers = [("ce_type", data.event_type().encode()), ("ce_id", str(pending.id).encode())]
        out.append((stream, value.encode(), headers))
    return out


async def main(total: int, steady_rate: float, steady_seconds: float) -> None:
    async with bench_world(dispatch_port=free_port(), policy_file=bench_policy()) as (
        settings,
        infrastructure,
    ):
        topics = [settings.topic(t) for t in (INTAKE_EVENTS, EVENTS)]
        await ensure_topics(settings, topics)
        service = await start_service("dispatch", settings)
        watcher = Watcher(settings, EVENTS, ASSIGNED)
        producer = make_producer(settings, client_id="bench-intake", max_batch_size=512 * 1024)
        await producer.start()
        topic = settings.topic(INTAKE_EVENTS)
        try:
            await watcher.start()
            await publish(producer, topic, sealed(settings, "intake", triaged_events(500, "WARM")))
            await watcher.wait_for(500, 120)

            meter = CpuMeter([service.pid], infrastructure)
            meter.start()
            started = time.perf_counter()
            await publish(
                producer, topic, sealed(settings, "intake", triaged_events(total, "BURST"))
            )
            await watcher.wait_for(500 + total, 600)
            throughput = total / (max(watcher.arrived.values()) - started)
            cpu = meter.stop(total)
            latencies = await steady(producer, settings, watcher, steady_rate, steady_seconds)
        finally:
            await watcher.stop()
            await producer.stop()
            service.terminate()
            await service.wait()
    report(
        {
            "tickets_per_s": round(throughput, 1),
            "p50_ms": round(statistics.median(latencies), 1),
            "p99_ms": round(statistics.quantiles(latencies, n=100)[98], 1),
            "steady_offered_per_s": steady_rate,
            "steady_tickets": len(latencies),
            "burst_tickets": total,
            "cpu_ms_per_ticket": cpu,
        }
    )


async def steady(
    producer: AIOKafkaProducer, settings: Settings, watcher: Watcher, rate: float, seconds: float
) -> list[float]:
    topic = settings.topic(INTAKE_EVENTS)
    events = sealed(settings, "intake", triaged_events(int(rate * seconds), "STEADY"))
    sent_at: dict[str, float] = {}
    expected = len(watcher.arrived) + len(events)
    started = time.perf_counter()
    for n, (key, value, headers) in enumerate(events):
        if (wait := started + n / rate - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        sent_at[f"STEADY-{n:07d}"] = time.perf_counter()
        await producer.send(topic, value=value, key=key.encode(), headers=headers)
    await watcher.wait_for(expected, 300)
    return [(watcher.arrived[number] - at) * 1000 for number, at in sent_at.items()]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, default=20_000)
    parser.add_argument("--steady-rate", type=float, default=500)
    parser.add_argument("--steady-seconds", type=float, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.tickets, args.steady_rate, args.steady_seconds))

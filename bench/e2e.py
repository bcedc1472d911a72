"""The whole flow per ticket, measured from outside: the system as ``desk up`` runs it.

    python -m bench.e2e [--requests 5000] [--rate 200] [--instances 1] [--warmup 200]
                        [--set DESK_NAME=VALUE ...]
    python -m bench.e2e --soak [--requests 100000] [--rate 200] [--window 30]

``desk up`` starts as a user starts it (embedded PostgreSQL and broker, each service its own
process), with notify's SMTP server, webhooks and SMS endpoint at receivers in their own process
(``tests.support.system``: the fault suite's harness). A channel adapter publishes ``--requests``
requests as fast as the broker takes them (the *burst*: throughput), then as many again at a
steady ``--rate`` (the *steady* phase: latency). Nobody works the tickets, so they stay open.

Each request's stages are read from the records themselves, never from when someone polled:

* ``published`` — the request's record timestamp on ``requests.incoming`` (the adapter's send);
* ``recorded`` — ``ticket.received`` on ``intake.events`` (its record timestamp: the relay's send);
* ``dispatched`` — the first ``ticket.assigned`` or ``ticket.queued`` on ``dispatch.events``;
* ``clocks_started`` — the last ``sla.clock_started`` on ``sla.events`` caused by one of the
  ticket's events up to its first dispatch (not one started later, when it is escalated);
* ``acknowledged`` — the customer's acknowledgement arriving at the receivers (their journal) or,
  for chat, web, api and phone customers, published on ``customer.messages`` for their adapter
  (its record timestamp).

Prints one JSON object: per stage the burst's throughput (tickets reaching it per second since
the first publish) and the steady phase's p50/p99 latency from ``published``; CPU milliseconds
per ticket by process (each service, PostgreSQL with its backends, the broker, ``desk up``, the
receivers, this benchmark) over each phase, and per second while nothing is offered
(``idle_cpu_ms_per_s``: what polling costs); and, measured in the same run just before the burst,
the ceilings: the raw broker produce rate and PostgreSQL's batched-insert rate — every figure is
read as a ratio to them, since machines here differ 2-3x and the cores are shared (the load
average is printed too).

``--soak`` runs only a steady phase (``--requests`` at ``--rate``, nobody resolving, so every
ticket stays open) and prints each process's resident memory at its start and end (and the most
seen), and per ``--window`` seconds of publishing the p50/p99 latency to each stage with the
services' resident memory and records each has still to apply (its consumer groups' lag) at the
window's end: state that grows with open tickets shows as a slope in either, and a process that
falls behind holds what it has fetched (read its memory beside its backlog).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import psutil

from bench._support import report
from services import service_names
from services.dispatch.events import TicketAssigned, TicketQueued
from services.intake.contract import INCOMING_TOPIC
from services.intake.events import TicketReceived, TicketTriaged
from services.notify.events import MESSAGES_TOPIC, CustomerMessage
from services.sla.events import ClockStarted
from shared.database import connect
from shared.kafka import ensure_topics, make_producer
from shared.settings import Settings
from tests.support.observer import Seen
from tests.support.system import Instance, System, running_system

STAGES = ("recorded", "dispatched", "clocks_started", "acknowledged")
SERVICES = frozenset(service_names())
OBSERVER_PATIENCE_MS = 250
"""How long the benchmark's observer lets a fetch wait (a test's waits 50 ms)."""
ACKNOWLEDGEMENT = ":acknowledgement"
"""How a customer's acknowledgement notice key ends (``<cause event>:<recipient>:<template>``)."""


class Stages:
    """When each request reached each stage, from the observer's notes of every topic (record
    timestamps) and the receivers' journal (arrival times)."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.request_of: dict[str, str] = {}
        """Ticket id -> request key (``<channel>:<channel_message_id>``)."""
        self.published: list[tuple[str, float]] = []
        """Acknowledgements published on ``customer.messages``: (notice key, record time)."""
        system.observer.watch(
            system.settings.topic("intake.events"), TicketReceived.event_type(), self._received
        )
        system.observer.watch(
            system.settings.topic(MESSAGES_TOPIC), CustomerMessage.event_type(), self._message
        )

    def _received(self, seen: Any, value: bytes) -> None:
        data = json.loads(value)["data"]
        self.request_of[seen.subject] = f"{data['channel']}:{data['channel_message_id']}"

    def _message(self, seen: Any, value: bytes) -> None:
        key = json.loads(value)["data"]["notice_key"]
        if key.endswith(ACKNOWLEDGEMENT):
            self.published.append((key, seen.stamped))

    def _acknowledgements(self) -> list[tuple[str, float]]:
        """(notice key, when) of every acknowledgement: arrived at the receivers, or published
        for a channel's adapter."""
        received = self.system.receivers.received()
        return [(r.key, r.at) for r in received if r.key.endswith(ACKNOWLEDGEMENT)] + list(
            self.published
        )

    def acknowledged(self) -> int:
        """Acknowledgements sent so far (repeats included)."""
        return len(self._acknowledgements())

    def times(self) -> dict[str, dict[str, float]]:
        """Request key -> stage -> wall time (seconds); ``published`` included."""
        journeys: dict[str, dict[str, float]] = {}
        for seen in self.system.observer.records(self.system.settings.topic(INCOMING_TOPIC)):
            journeys.setdefault(seen.key, {}).setdefault("published", seen.stamped)
        for ticket, stages in self._tickets().items():
            request = self.request_of.get(ticket)
            if request in journeys:
                journeys[request].update(stages)
        return journeys

    def _tickets(self) -> dict[str, dict[str, float]]:
        """Ticket id -> stage -> wall time, from the services' topics and the receivers."""
        topic, records = self.system.settings.topic, self.system.observer.records
        tickets: dict[str, dict[str, float]] = {}
        triaged: dict[str, str] = {}
        """Event id of a ``ticket.triaged`` (the acknowledgement's cause) -> ticket id."""
        arrival: dict[str, set[str]] = {}
        """Ticket id -> the ids of its events up to its first dispatch (intake's, dispatch's
        classification and assignment): the clocks they start are the stage's, not one started
        later (the ticket escalated or reassigned, minutes on)."""
        for seen in records(topic("intake.events")):
            if seen.subject and seen.type == TicketReceived.event_type():
                tickets.setdefault(seen.subject, {}).setdefault("recorded", seen.stamped)
                arrival.setdefault(seen.subject, set()).add(seen.event_id or "")
            elif seen.subject and seen.event_id and seen.type == TicketTriaged.event_type():
                triaged[seen.event_id] = seen.subject
                arrival.setdefault(seen.subject, set()).add(seen.event_id)
        _first_dispatch(records(topic("dispatch.events")), tickets, arrival)
        for seen in records(topic("sla.events")):
            if seen.subject and seen.type == ClockStarted.event_type():
                if seen.headers.get("ce_causationid") not in arrival.get(seen.subject, ()):
                    continue
                stages = tickets.setdefault(seen.subject, {})
                stages["clocks_started"] = max(stages.get("clocks_started", 0.0), seen.stamped)
        for key, at in self._acknowledgements():
            ticket = triaged.get(key.split(":", 1)[0])
            if ticket is not None:
                tickets.setdefault(ticket, {}).setdefault("acknowledged", at)
        return tickets


def _first_dispatch(
    records: Iterable[Seen], tickets: dict[str, dict[str, float]], arrival: dict[str, set[str]]
) -> None:
    """Each ticket's ``dispatched`` stage, and its dispatch events up to it in ``arrival``
    (a ticket's records are in order: one partition)."""
    dispatched = {TicketAssigned.event_type(), TicketQueued.event_type()}
    for seen in records:
        if not seen.subject or not seen.event_id:
            continue
        stages = tickets.setdefault(seen.subject, {})
        if "dispatched" in stages:
            continue
        arrival.setdefault(seen.subject, set()).add(seen.event_id)
        if seen.type in dispatched:
            stages["dispatched"] = seen.stamped


class Processes:
    """Every process of the run, by name: each service (its instances together), PostgreSQL
    with its backends, the broker, ``desk up``, the receivers, this benchmark; their CPU
    seconds so far and their resident memory."""

    def __init__(self, system: System, instances: list[Instance]) -> None:
        self.system = system
        self.instances = instances

    def _roots(self) -> Iterable[tuple[str, int, bool]]:
        run = self.system.run()
        yield "desk_up", int(run["desk_pid"]), False
        yield "broker", int(run["broker_pid"]), True
        yield "postgres", int(run["postgres_pid"]), True
        for name in service_names():
            yield name, int(run["services"][name]), False
        for instance in self.instances:
            yield instance.name, instance.process.pid, False
        yield "receivers", self.system.receivers.process.pid, False
        yield "bench", os.getpid(), False

    def _each(self) -> Iterable[tuple[str, psutil.Process]]:
        for name, pid, family in self._roots():
            try:
                root = psutil.Process(pid)
                yield from ((name, p) for p in [root, *root.children(recursive=True)] if family)
                if not family:
                    yield name, root
            except psutil.Error:
                continue

    def sample(self) -> dict[str, float]:
        """CPU seconds by name."""
        spent: dict[str, float] = {}
        for name, process in self._each():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            spent[name] = spent.get(name, 0.0) + times.user + times.system
        return spent

    def memory(self) -> dict[str, float]:
        """Resident MB by name: each service instance on its own (``sla``, ``sla#2``), the
        families summed (PostgreSQL's sum counts its shared buffers once per backend: read
        its change, not its level)."""
        resident: dict[str, float] = {}
        extra = {instance.process.pid: instance.name for instance in self.instances}
        seen: Counter[str] = Counter()
        for name, process in self._each():
            try:
                mb = process.memory_info().rss / 2**20
            except psutil.Error:
                continue
            label = name
            if process.pid in extra:
                seen[name] += 1
                label = f"{name}#{seen[name] + 1}"
            resident[label] = round(resident.get(label, 0.0) + mb, 1)
        return resident


def per_ticket(before: dict[str, float], after: dict[str, float], tickets: int) -> dict[str, float]:
    """CPU milliseconds per ticket by process over a window, with their ``total``."""
    spent = {name: (after[name] - before.get(name, 0.0)) * 1000 / tickets for name in after}
    return {
        **{name: round(ms, 3) for name, ms in sorted(spent.items())},
        "total": round(sum(spent.values()), 3),
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latencies(journeys: dict[str, dict[str, float]], keys: Iterable[str]) -> dict[str, Any]:
    """p50/p99 milliseconds from ``published`` to each stage, over ``keys``."""
    result: dict[str, Any] = {}
    for stage in STAGES:
        waits = [
            (journeys[k][stage] - journeys[k]["published"]) * 1000
            for k in keys
            if stage in journeys.get(k, {}) and "published" in journeys[k]
        ]
        result[stage] = (
            {
                "p50_ms": round(statistics.median(waits), 1),
                "p99_ms": round(percentile(waits, 0.99), 1),
                "reached": len(waits),
            }
            if waits
            else {"reached": 0}
        )
    return result


def throughput(journeys: dict[str, dict[str, float]], keys: list[str]) -> dict[str, Any]:
    """Tickets per second reaching each stage, from the first publish to the last arrival."""
    first = min(journeys[k]["published"] for k in keys if "published" in journeys.get(k, {}))
    result: dict[str, Any] = {}
    for stage in STAGES:
        reached = [journeys[k][stage] for k in keys if stage in journeys.get(k, {})]
        result[stage] = {
            "per_s": round(len(reached) / (max(reached) - first), 1) if reached else 0.0,
            "reached": len(reached),
        }
    return result


async def until_acknowledged(stages: Stages, expected: int, timeout: float) -> None:
    """Wait until ``expected`` acknowledgements in all have arrived, or ``timeout`` passes
    without a new one (then the JSON says how many stages were reached)."""
    last, changed = -1, time.monotonic()
    while (count := stages.acknowledged()) < expected:
        if count != last:
            last, changed = count, time.monotonic()
        elif time.monotonic() - changed > timeout:
            return
        await asyncio.sleep(0.2)


async def broker_ceiling(settings: Settings, count: int = 30_000, size: int = 700) -> float:
    """Records per second the broker takes from one producer, batched, on a fresh topic."""
    topic = settings.topic(f"bench.ceiling.{uuid4().hex[:8]}")
    await ensure_topics(settings, [topic])
    producer = make_producer(settings, client_id="bench-ceiling", max_batch_size=512 * 1024)
    await producer.start()
    try:
        value = b"x" * size
        started = time.perf_counter()
        sends = [await producer.send(topic, value=value, key=b"%d" % n) for n in range(count)]
        await asyncio.gather(*sends)
        return round(count / (time.perf_counter() - started), 1)
    finally:
        await producer.stop()


async def database_ceiling(url: str, rows: int = 100_000, batch: int = 1_000) -> float:
    """Rows per second PostgreSQL inserts, ``batch`` JSON rows of 700 bytes a statement, each
    statement its own transaction (the server's default durability)."""
    schema = f"bench_ceiling_{uuid4().hex[:8]}"
    conn = await connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"CREATE TABLE {schema}.rows (id bigint PRIMARY KEY, body json)")
        body = json.dumps({"padding": "x" * 680})
        insert = (
            f"INSERT INTO {schema}.rows SELECT i, b::json FROM unnest($1::bigint[], $2::text[]) "
            "AS t(i, b)"
        )
        started = time.perf_counter()
        for first in range(0, rows, batch):
            await conn.execute(insert, list(range(first, first + batch)), [body] * batch)
        rate = rows / (time.perf_counter() - started)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        return round(rate, 1)
    finally:
        await conn.close()


async def phase(
    stages: Stages, cpu: Processes, publish: Callable[[], Awaitable[list[str]]], timeout: float
) -> tuple[list[str], dict[str, float]]:
    """Run ``publish()`` and wait until every request it published reached every stage; those
    requests and the CPU per ticket by process over the whole phase."""
    acknowledged = stages.acknowledged()
    before = cpu.sample()
    keys = await publish()
    await until_acknowledged(stages, acknowledged + len(keys), timeout)
    await until_every_stage(stages, keys, timeout)
    return keys, per_ticket(before, cpu.sample(), len(keys))


async def until_every_stage(stages: Stages, keys: list[str], timeout: float) -> None:
    """Wait until each request reached every stage, or ``timeout`` passes without one more.

    The acknowledgement does not wait for dispatch or the SLA clocks (notify acknowledges
    intake's events), so a phase that ended with the last acknowledgement read the other stages
    of its last requests before they happened."""
    last, changed = -1, time.monotonic()
    while True:
        journeys = stages.times()
        done = sum(all(s in journeys.get(k, {}) for s in STAGES) for k in keys)
        if done == len(keys):
            return
        if done != last:
            last, changed = done, time.monotonic()
        elif time.monotonic() - changed > timeout:
            return
        await asyncio.sleep(0.5)


async def idle(cpu: Processes, seconds: float = 5.0) -> dict[str, float]:
    """CPU milliseconds per second of each process while nothing is offered: what polling costs."""
    before = cpu.sample()
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - started
    after = cpu.sample()
    spent = {name: (after[name] - before.get(name, 0.0)) * 1000 / elapsed for name in after}
    return {
        **{name: round(ms, 1) for name, ms in sorted(spent.items())},
        "total": round(sum(spent.values()), 1),
    }


@asynccontextmanager
async def warmed_up(
    instances: int, warmup: int, timeout: float, settings: dict[str, str] | None
) -> AsyncIterator[tuple[System, Stages, Processes]]:
    """The system running with ``instances`` of each service, ``warmup`` requests through it
    (the consumer groups, the pools, the caches), its stages and processes watched."""
    log_dir = os.environ.get("BENCH_LOG_DIR")
    # The services' own clock (PostgreSQL's), not the harness's driven one: time stamps are real.
    # Stages are read from record time stamps, so the observer may wait longer for its fetches
    # than a test's (which reads arrival times): it costs the broker under measure less.
    async with running_system(
        Path(log_dir) if log_dir else None,
        env={"DESK_CLOCK": "database", **(settings or {})},
        observer_patience_ms=OBSERVER_PATIENCE_MS,
    ) as system:
        extra = [
            await system.extra_instance(name)
            for name in service_names()
            for _ in range(instances - 1)
        ]
        stages, processes = Stages(system), Processes(system, extra)
        await phase(stages, processes, lambda: system.adapter.burst(warmup), timeout)
        yield system, stages, processes


async def measure(
    total: int,
    rate: float,
    instances: int,
    warmup: int,
    timeout: float,
    *,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the system, offer the burst and the steady load; the figures (see the module)."""
    async with warmed_up(instances, warmup, timeout, settings) as (system, stages, cpu):
        idle_cpu = await idle(cpu)
        load_before = os.getloadavg()
        ceilings = {
            "broker_records_per_s": await broker_ceiling(system.settings),
            "postgres_rows_per_s": await database_ceiling(system.settings.require_database_url()),
        }
        burst_keys, burst_cpu = await phase(
            stages, cpu, lambda: system.adapter.burst(total), timeout
        )
        steady_keys, steady_cpu = await phase(
            stages, cpu, lambda: system.adapter.paced(total, rate), timeout
        )
        load_after = os.getloadavg()
        journeys = stages.times()

    broker = ceilings["broker_records_per_s"]
    sent = sorted(journeys[k]["published"] for k in steady_keys if k in journeys)
    return {
        "requests": total,
        "instances": instances,
        "burst": {
            stage: {**figures, "of_broker_ceiling_pct": round(100 * figures["per_s"] / broker, 2)}
            for stage, figures in throughput(journeys, burst_keys).items()
        },
        "steady": {
            "offered_per_s": rate,
            "published_per_s": round((len(sent) - 1) / (sent[-1] - sent[0]), 1),
            **latencies(journeys, steady_keys),
        },
        "ceilings": ceilings,
        "cpu_ms_per_ticket": {"burst": burst_cpu, "steady": steady_cpu},
        "idle_cpu_ms_per_s": idle_cpu,
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in load_after],
        },
    }


async def soak(
    total: int,
    rate: float,
    instances: int,
    warmup: int,
    timeout: float,
    *,
    window: float,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``total`` requests at a steady ``rate``, nobody resolving (every ticket stays open):
    each process's resident memory every ``window`` seconds and, per window of publishing,
    the latency to each stage — what stays flat and what grows with the open tickets."""
    async with warmed_up(instances, warmup, timeout, settings) as (system, stages, processes):
        load_before = os.getloadavg()
        memory: list[tuple[float, dict[str, float]]] = []
        backlog: list[tuple[float, dict[str, int]]] = []

        async def sample() -> None:
            while True:
                memory.append((time.time(), processes.memory()))
                backlog.append((time.time(), await behind(system)))
                await asyncio.sleep(window)

        sampler = asyncio.create_task(sample())
        try:
            keys, cpu = await phase(
                stages, processes, lambda: system.adapter.paced(total, rate), timeout
            )
        finally:
            sampler.cancel()
        memory.append((time.time(), processes.memory()))
        backlog.append((time.time(), await behind(system)))
        load_after = os.getloadavg()
        journeys = stages.times()

    return {
        "mode": "soak",
        "requests": total,
        "offered_per_s": rate,
        "instances": instances,
        "window_s": window,
        "rss_mb": resident_change(memory),
        "most_behind": {
            name: max(sample.get(name, 0) for _, sample in backlog) for name in backlog[0][1]
        },
        "windows": windows(journeys, keys, memory, backlog, window),
        "cpu_ms_per_ticket": cpu,
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in load_after],
        },
    }


def resident_change(memory: list[tuple[float, dict[str, float]]]) -> dict[str, Any]:
    """Per process: resident MB at the start, at the end, the most seen, and the change."""
    first, last = memory[0][1], memory[-1][1]
    return {
        name: {
            "start": first[name],
            "end": last.get(name, 0.0),
            "max": max(sample.get(name, 0.0) for _, sample in memory),
            "change_pct": round(100 * (last.get(name, 0.0) - first[name]) / first[name], 1),
        }
        for name in sorted(first)
    }


async def behind(system: System) -> dict[str, int]:
    """Records each service's consumers have still to apply (their groups' lag, summed): a
    process behind holds fetched records and pending batches, so its memory is read beside it."""
    prefix = system.settings.topic_prefix
    lag: Counter[str] = Counter()
    for group, records in (await system.lag.lag()).items():
        lag[group.removeprefix(prefix).split(".")[0]] += records
    return dict(lag)


def windows(
    journeys: dict[str, dict[str, float]],
    keys: list[str],
    memory: list[tuple[float, dict[str, float]]],
    backlog: list[tuple[float, dict[str, int]]],
    window: float,
) -> list[dict[str, Any]]:
    """Requests by the window they were published in: how many, p50/p99 to each stage, and
    each service's resident MB and records behind at the window's end."""
    published = {k: journeys[k]["published"] for k in keys if "published" in journeys.get(k, {})}
    start = min(published.values())
    buckets: dict[int, list[str]] = {}
    for key, at in published.items():
        buckets.setdefault(int((at - start) // window), []).append(key)
    found = []
    for n in sorted(buckets):
        end = start + (n + 1) * window
        rss = min(memory, key=lambda sample: abs(sample[0] - end))[1]
        lag = min(backlog, key=lambda sample: abs(sample[0] - end))[1]
        stages = latencies(journeys, buckets[n])
        found.append(
            {
                "from_s": round(n * window),
                "published": len(buckets[n]),
                **{
                    f"{stage}_ms": [figures.get("p50_ms"), figures.get("p99_ms")]
                    for stage, figures in stages.items()
                },
                "rss_mb": {name: mb for name, mb in rss.items() if name.split("#")[0] in SERVICES},
                "behind": lag,
            }
        )
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5_000, help="per phase")
    parser.add_argument("--rate", type=float, default=200.0, help="steady requests per second")
    parser.add_argument("--instances", type=int, default=1, help="instances of each service")
    parser.add_argument(
        "--soak",
        action="store_true",
        help="only the steady phase, --requests at --rate, every ticket left open: resident "
        "memory of each process and latency per window",
    )
    parser.add_argument("--window", type=float, default=30.0, help="seconds per soak window")
    parser.add_argument("--warmup", type=int, default=200, help="requests before measuring")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds without progress before giving up"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="DESK_NAME=VALUE",
        help="a setting of desk up and its services (repeatable), e.g. DESK_SMTP_CONNECTIONS=8",
    )
    args = parser.parse_args()
    chosen = dict(item.split("=", 1) for item in args.set)
    run = (args.requests, args.rate, args.instances, args.warmup, args.timeout)
    figures = asyncio.run(
        soak(*run, window=args.window, settings=chosen)
        if args.soak
        else measure(*run, settings=chosen)
    )
    figures["settings"] = chosen
    report(figures)

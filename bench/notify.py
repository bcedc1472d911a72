"""Notices delivered per second to a local SMTP server and a local webhook receiver.

``python -m bench.notify [--tickets 2000] [--clear | --compare ROUNDS]``

notify runs as its own process with the shipped policy, every agent's webhook pointed at a local
HTTP receiver. The benchmark publishes, for each ticket, intake's received and triaged events and
dispatch's assigned event (as their relays would): two notices per ticket — the customer's
acknowledgement by email and the agent's assignment by signed webhook. ``notices_per_s`` counts
from the first publish until the SMTP server and the receiver have both seen every notice; what
they saw is checked for repeats.

Each ticket has a customer of its own whose personal fields are sealed under their data key, as
intake seals them (``--clear`` publishes them in clear, as before sealing), so notify opens
every receipt. ``cpu_ms_per_ticket`` is the CPU each part of the machine spent per ticket over
that window (notify, PostgreSQL, the broker, this benchmark) and the share left idle.

``--compare ROUNDS`` prices sealing: notify reading sealed tickets and one reading them in clear,
side by side on the same servers (each with its own receivers), ``--tickets`` shared out over
ROUNDS rounds; ``sealing_cpu_pct`` is what sealing adds to notify's CPU per ticket, with each
round's beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaProducer

from bench._support import (
    CpuMeter,
    Outgoing,
    Variant,
    bench_world,
    beside,
    bounds,
    publish,
    report,
    sealed,
    sealing_cost,
    side_by_side,
    start_service,
    written_policy,
)
from services import service_migrations
from services.dispatch.events import TicketAssigned
from services.intake.events import CustomerDetails, TicketReceived, TicketTriaged, ticket_stream
from services.policy import DEFAULT_POLICY
from shared.database import connect
from shared.events import EventData, new_event_id
from shared.eventstore import EventStore, PendingEvent, with_version
from shared.kafka import ensure_topics, make_producer
from shared.keystore import KeyStore, SubjectKey
from shared.local.ports import free_port
from shared.local.sinks import SmtpServer
from shared.personal import DataKeys
from shared.privileges import provision
from shared.settings import Settings

AGENTS = ["li.na", "wang.qiang", "emma.jones"]


def bench_policy(http_port: int) -> Path:
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    for agent in policy["directory"]["agents"]:
        agent["webhook_url"] = f"http://127.0.0.1:{http_port}/agents/{agent['id']}"
    return written_policy(policy)


def _record(
    store: EventStore, stream: str, version: int, data: EventData, ticket_id: str
) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    pending = PendingEvent(data, datetime.now(UTC), correlation_id=ticket_id, subject=ticket_id)
    value = with_version(store._envelope_json(stream, pending, data.event_type()), version)
    headers = [("ce_type", data.event_type().encode()), ("ce_id", str(pending.id).encode())]
    return stream, value.encode(), headers


def ticket_events(count: int, customers: Sequence[SubjectKey] = ()) -> tuple[Outgoing, Outgoing]:
    """(intake's events, dispatch's events) for ``count`` tickets; given ``customers``, the n-th
    ticket's personal fields sealed under the n-th one's key."""
    keys = DataKeys({c.ref: c.key for c in customers})
    intake, dispatch = (
        EventStore("intake", "servicedesk/intake"),
        EventStore("d", "servicedesk/dispatch"),
    )
    now = datetime.now(UTC)
    intake_out: Outgoing = []
    dispatch_out: Outgoing = []
    for n in range(count):
        ticket_id, number = str(new_event_id()), f"BENCH-{n:07d}"
        ref = customers[n].ref if customers else None
        stream = ticket_stream(ticket_id)
        language = "zh" if n % 2 else "en"
        common: dict[str, Any] = {"ticket_id": ticket_id, "number": number}
        received = TicketReceived(
            **common,
            channel="email",
            channel_message_id=f"bench-{n}",
            received_at=now,
            customer=CustomerDetails(
                name=f"Customer {n}",
                email=f"customer{n}@example.com",
                language=language,
                ref=ref,
            ),
            subject="Printer jam",
            description="bench",
            priority="normal",
            language=language,
        )
        triaged = TicketTriaged(
            **common,
            complexity="general",
            category="fault",
            complaint=False,
            complaint_severity="none",
            rule="bench",
            matched=[],
            reason="bench",
            policy_version="bench",
            channel="email",
            priority="normal",
            language=language,
            subject="Printer jam",
            received_at=now,
            customer_key=ref,
        )
        assigned = TicketAssigned(
            **common,
            group_id="front-line",
            agent_id=AGENTS[n % len(AGENTS)],
            strategy="least_loaded",
            reason="bench",
            cause="classified",
            policy_version="bench",
        )
        if ref is not None:  # sealed as intake seals them
            received, triaged = keys.seal(received, ref), keys.seal(triaged, ref)
        intake_out += [
            _record(intake, stream, 1, received, ticket_id),
            _record(intake, stream, 2, triaged, ticket_id),
        ]
        dispatch_out.append(_record(dispatch, f"d-{stream}", 1, assigned, ticket_id))
    return intake_out, dispatch_out


def serve_sinks(smtp_port: int, http_port: int, emails: Any, hooks: Any, repeats: Any) -> None:
    """The receivers, in their own process (so they are not what is measured): the SMTP server
    of ``shared.local.sinks`` and a keep-alive HTTP server (uvicorn) that counts requests and
    repeated idempotency keys."""
    import uvicorn
    from aiosmtpd.controller import Controller

    class Counting(SmtpServer):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with emails.get_lock():
                emails.value += 1
            return "250 OK"

    controller = Controller(Counting(keep=False), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    seen: set[str] = set()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        key = dict(scope["headers"]).get(b"idempotency-key", b"").decode()
        with hooks.get_lock():
            hooks.value += 1
            if key in seen:
                repeats.value += 1
            seen.add(key)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=http_port, log_level="warning", access_log=False)


async def customers(settings: Settings, count: int) -> list[SubjectKey]:
    """A data subject per ticket in intake's key store, as intake makes them (notify reads
    their keys through its grant, as in production)."""
    conn = await connect(settings.require_database_url())
    try:
        await provision(conn, "intake", service_migrations("intake"))
        identities = [f"email:customer{n}@example.com" for n in range(count)]
        made = await KeyStore(settings).subjects(conn, identities)
    finally:
        await conn.close()
    return [made[i] for i in identities]


@dataclass
class Sinks:
    """The SMTP server and webhook receiver of one notify, in a process of their own, and what
    they counted."""

    smtp_port: int
    http_port: int
    emails: Any
    hooks: Any
    repeats: Any
    process: multiprocessing.Process

    @classmethod
    def start(cls) -> Sinks:
        smtp_port, http_port = free_port(), free_port()
        emails, hooks, repeats = (multiprocessing.Value("i", 0) for _ in range(3))
        process = multiprocessing.Process(
            target=serve_sinks, args=(smtp_port, http_port, emails, hooks, repeats), daemon=True
        )
        process.start()
        return cls(smtp_port, http_port, emails, hooks, repeats, process)

    def settings(self) -> dict[str, Any]:
        """What a notify sending here is given."""
        return {
            "notify_port": free_port(),
            "smtp_port": self.smtp_port,
            "policy_file": bench_policy(self.http_port),
        }

    @property
    def received(self) -> int:
        return int(self.emails.value + self.hooks.value)

    async def wait_for(self, notices: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.received < notices:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.received} of {notices} notices within {timeout} s")
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        self.process.terminate()
        self.process.join()


async def run(tickets: int, clear: bool) -> dict[str, Any]:
    sinks = Sinks.start()
    try:
        async with bench_world(**sinks.settings()) as (settings, infrastructure):
            topics = {name: settings.topic(name) for name in ("intake.events", "dispatch.events")}
            await ensure_topics(settings, list(topics.values()))
            subjects = [] if clear else await customers(settings, tickets)
            service = await start_service("notify", settings)
            producer = make_producer(settings, client_id="bench-notify", max_batch_size=512 * 1024)
            await producer.start()
            events = ticket_events(tickets, subjects)
            meter = CpuMeter([service.pid], infrastructure)
            try:
                meter.start()
                started = time.perf_counter()
                await publish_tickets(producer, settings, events)
                deadline = time.monotonic() + 600
                queued_s: float | None = None
                database = await connect(settings.require_database_url(), schema="notify")
                while sinks.received < 2 * tickets:
                    if (
                        queued_s is None
                        and await database.fetchval("SELECT count(*) FROM deliveries")
                        >= 2 * tickets
                    ):
                        queued_s = time.perf_counter() - started
                    if time.monotonic() > deadline:
                        raise RuntimeError("notices did not all arrive within 600 s")
                    await asyncio.sleep(0.05)
                elapsed = time.perf_counter() - started
                cpu = meter.stop(tickets)
                await database.close()
                await asyncio.sleep(2)  # anything sent twice would show up now
            finally:
                await producer.stop()
                service.terminate()
                await service.wait()
    finally:
        sinks.stop()
    return {
        "benchmark": "notify",
        "tickets": tickets,
        "notices": 2 * tickets,
        "notices_per_s": round(2 * tickets / elapsed, 1),
        "notices_queued_per_s": round(2 * tickets / queued_s, 1) if queued_s else None,
        "emails_received": sinks.emails.value,
        "webhooks_received": sinks.hooks.value,
        "webhooks_repeated": sinks.repeats.value,
        "personal_fields": "clear" if clear else "sealed",
        # Where the cores went until every notice arrived: CPU ms per ticket by process role.
        "cpu_ms_per_ticket": cpu,
    }


async def publish_tickets(
    producer: AIOKafkaProducer, settings: Settings, events: tuple[Outgoing, Outgoing]
) -> None:
    """intake's events, then dispatch's, as their relays would publish them."""
    intake, dispatch = events
    await publish(producer, settings.topic("intake.events"), sealed(settings, "intake", intake))
    await publish(
        producer, settings.topic("dispatch.events"), sealed(settings, "dispatch", dispatch)
    )


WARM_UP = 200
"""Tickets each variant is handed before anything is measured."""


async def compare(rounds: int, size: int) -> dict[str, Any]:
    """What sealing costs notify, the two side by side (as ``bench.intake --compare``): a notify
    reading sealed tickets and one reading them in clear, each with a database, topics and
    receivers of its own on the same servers, handed the same tickets round by round, published
    at once; a round's CPU is each notify's from the publishing until its receivers have every
    notice of the round."""
    sinks = {"sealed": Sinks.start(), "clear": Sinks.start()}
    cpu: dict[str, list[float]] = {"sealed": [], "clear": []}
    try:
        async with (
            bench_world(**sinks["sealed"].settings()) as (sealed_settings, infrastructure),
            beside(sealed_settings, infrastructure, **sinks["clear"].settings()) as clear,
        ):
            worlds = {"sealed": sealed_settings, "clear": clear}
            for settings in worlds.values():
                names = ("intake.events", "dispatch.events")
                await ensure_topics(settings, [settings.topic(name) for name in names])
            total = WARM_UP + rounds * size
            subjects = await customers(sealed_settings, total)
            events = {"sealed": ticket_events(total, subjects), "clear": ticket_events(total)}
            services = {m: await start_service("notify", s) for m, s in worlds.items()}
            producer = make_producer(
                sealed_settings, client_id="bench-notify", max_batch_size=512 * 1024
            )
            await producer.start()
            try:
                for n, (first, last) in enumerate(bounds(rounds, size, WARM_UP)):
                    order = sorted(worlds, reverse=n % 2 == 1)  # who goes first
                    spent = await side_by_side(
                        {
                            m: round_of(
                                producer, services[m], worlds[m], sinks[m],
                                (events[m][0][2 * first : 2 * last], events[m][1][first:last]),
                            )
                            for m in order
                        },
                        infrastructure,
                        last - first,
                    )  # fmt: skip
                    if n:  # the first hands out the warm-up
                        for mode, ms in spent.items():
                            cpu[mode].append(ms)
                repeats = {m: int(sink.repeats.value) for m, sink in sinks.items()}
                shares = {m: await sealed_share(settings) for m, settings in worlds.items()}
            finally:
                await producer.stop()
                for service in services.values():
                    service.terminate()
                    await service.wait()
    finally:
        for sink in sinks.values():
            sink.stop()
    if any(repeats.values()):
        raise RuntimeError(f"webhooks repeated: {repeats}")
    if shares != {"sealed": 1.0, "clear": 0.0}:
        raise RuntimeError(f"a variant measured something else: notices sealed {shares}")
    return {
        "benchmark": "notify",
        "rounds": rounds,
        "tickets_a_round": size,
        **sealing_cost(cpu, "ticket"),
        "notices_sealed_share": shares,
    }


async def sealed_share(settings: Settings) -> float:
    """The share of notices ``deliveries`` keeps sealed: 1 reading sealed tickets, 0 in clear
    (a check that the run measured what it says)."""
    conn = await connect(settings.require_database_url())
    try:
        share = await conn.fetchval(
            "SELECT avg((subject LIKE '{\"ref\": %')::int) FROM notify.deliveries"
        )
    finally:
        await conn.close()
    return round(float(share), 3)


def round_of(
    producer: AIOKafkaProducer,
    process: asyncio.subprocess.Process,
    settings: Settings,
    sinks: Sinks,
    events: tuple[Outgoing, Outgoing],
) -> Variant:
    """Tickets for one notify side by side: published to its topics, done when its receivers
    have every notice of them (two a ticket)."""
    expected = sinks.received + 2 * len(events[1])
    return (
        process.pid,
        lambda: publish_tickets(producer, settings, events),
        lambda: sinks.wait_for(expected),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--clear", action="store_true", help="personal fields in clear")
    parser.add_argument(
        "--compare",
        type=int,
        metavar="ROUNDS",
        help="notify reading sealed and clear tickets side by side, --tickets shared out over "
        "ROUNDS: what sealing costs",
    )
    args = parser.parse_args()
    if args.compare:
        report(asyncio.run(compare(args.compare, args.tickets // args.compare)))
    else:
        report(asyncio.run(run(args.tickets, args.clear)))


if __name__ == "__main__":
    main()

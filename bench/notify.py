"""Notices delivered per second to a local SMTP server and a local webhook receiver.

``python -m bench.notify [--tickets 2000]``

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
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench._support import (
    CpuMeter,
    Outgoing,
    bench_world,
    publish,
    report,
    sealed,
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


async def run(tickets: int, clear: bool) -> dict[str, Any]:
    smtp_port, http_port = free_port(), free_port()
    emails, hooks, repeats = (multiprocessing.Value("i", 0) for _ in range(3))
    sinks = multiprocessing.Process(
        target=serve_sinks, args=(smtp_port, http_port, emails, hooks, repeats), daemon=True
    )
    sinks.start()
    try:
        async with bench_world(
            notify_port=free_port(), smtp_port=smtp_port, policy_file=bench_policy(http_port)
        ) as (settings, infrastructure):
            topics = {name: settings.topic(name) for name in ("intake.events", "dispatch.events")}
            await ensure_topics(settings, list(topics.values()))
            subjects = [] if clear else await customers(settings, tickets)
            service = await start_service("notify", settings)
            producer = make_producer(settings, client_id="bench-notify", max_batch_size=512 * 1024)
            await producer.start()
            intake, dispatch = ticket_events(tickets, subjects)
            meter = CpuMeter([service.pid], infrastructure)
            try:
                meter.start()
                started = time.perf_counter()
                await publish(producer, topics["intake.events"], sealed(settings, "intake", intake))
                dispatched = sealed(settings, "dispatch", dispatch)
                await publish(producer, topics["dispatch.events"], dispatched)
                deadline = time.monotonic() + 600
                queued_s: float | None = None
                database = await connect(settings.require_database_url(), schema="notify")
                while emails.value + hooks.value < 2 * tickets:
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
        sinks.terminate()
        sinks.join()
    return {
        "benchmark": "notify",
        "tickets": tickets,
        "notices": 2 * tickets,
        "notices_per_s": round(2 * tickets / elapsed, 1),
        "notices_queued_per_s": round(2 * tickets / queued_s, 1) if queued_s else None,
        "emails_received": emails.value,
        "webhooks_received": hooks.value,
        "webhooks_repeated": repeats.value,
        "personal_fields": "clear" if clear else "sealed",
        # Where the cores went until every notice arrived: CPU ms per ticket by process role.
        "cpu_ms_per_ticket": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--clear", action="store_true", help="personal fields in clear")
    args = parser.parse_args()
    report(asyncio.run(run(args.tickets, args.clear)))


if __name__ == "__main__":
    main()

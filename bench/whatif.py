"""What-if over 100,000 past tickets: how long ``desk sla what-if`` takes to replay them.

``python -m bench.whatif [--tickets 100000] [--days 7]``

The history is built fast, without Kafka and without running the services: each ticket's
lifecycle as dispatch records it — classified, assigned, accepted, answered (delays drawn per
complexity, so some answers are late), work started, for some a wait for the customer and the
reply, resolved, closed a day later; a few reopened, a few still open — is appended to
dispatch's event store (its append path, 2,000 tickets a round trip), and sla's tables are
filled as the sla service fills them: its :class:`Timekeeper` decides the clock events (a timer
firing each mark when due) and its ``ClockBoard`` projection folds them into the clocks table;
the ticket facts go through sla's storage. Then it times ``sla.queries.what_if`` — what
``desk sla what-if`` runs — with the shipped policy's simple-response target tightened from 30
to 20 minutes over the last ``--days`` days.

Prints ``tickets`` (replayed), ``clocks``, ``whatif_seconds`` (target: ≤ 60 s for 100,000
tickets), ``tickets_per_s``, ``changes`` (clocks whose outcome would change), the CPU seconds
the what-if took (reading and sending in this process, replaying in the worker processes,
PostgreSQL) with the machine's idle share meanwhile, ``dispatch_events`` and ``build_seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psutil
import yaml

from bench._support import CpuMeter, Stopwatch, bench_world, report
from services import service_migrations
from services.dispatch import events as dispatch
from services.dispatch import queries as dispatch_queries
from services.dispatch.routing import classify
from services.intake.events import ticket_stream
from services.policy import DEFAULT_POLICY, Policy
from services.sla import queries as sla_queries
from services.sla import storage as sla_storage
from services.sla.timekeeper import Timekeeper
from shared.database import Connection, connect
from shared.events import EventData, new_event_id
from shared.eventstore import NO_STREAM, EventStore, PendingEvent, RecordedEvent, StreamAppend
from shared.migrations import migrate
from shared.policyfile import parse_policy, policy_version

CHUNK = 2_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Timeline = list[tuple[EventData, datetime]]


def policies() -> tuple[Policy, str, Policy, str]:
    """The shipped policy, and the proposal: simple requests answered within 20 minutes."""
    shipped = DEFAULT_POLICY.read_bytes()
    document = yaml.safe_load(shipped)
    for rule in document["sla"]["targets"]:
        if rule.get("name") == "simple response":
            rule["target"] = "20m"
    proposed = yaml.safe_dump(document, allow_unicode=True).encode()
    return (
        parse_policy(shipped, Policy),
        policy_version(shipped),
        parse_policy(proposed, Policy),
        policy_version(proposed),
    )


def lifecycle(rng: random.Random, n: int, received: datetime, policy: Policy) -> Timeline:
    """One ticket's events, as dispatch would record them."""
    complaint = rng.random() < 0.05
    severity = ("major" if rng.random() < 0.2 else "ordinary") if complaint else "none"
    complexity = rng.choices(["simple", "general", "complex"], [0.5, 0.38, 0.12])[0]
    product = rng.choice([None, "pc", "laptop", "printer", "network", "erp"])
    route = classify(
        policy.routing,
        complexity=complexity,  # type: ignore[arg-type]
        complaint_severity=severity,  # type: ignore[arg-type]
        product_line=product,
        problem_type=None,
    )
    ticket_id, number = str(new_event_id()), f"REQ-2026-{n:07d}"
    ids = {"ticket_id": ticket_id, "number": number}
    agent = rng.choice([a.id for a in policy.directory.agents if route.group_id in a.groups])
    category = (
        "complaint"
        if complaint
        else {"simple": "inquiry", "general": "fault"}.get(complexity, "problem")
    )
    at = received + timedelta(seconds=2)
    events: Timeline = [
        (
            dispatch.TicketClassified(
                **ids,
                group_id=route.group_id,
                route=route.route,
                reason=route.reason,
                complexity=complexity,
                category=category,
                complaint=complaint,
                complaint_severity=severity,
                channel=rng.choice(["phone", "chat", "email", "web", "api"]),
                priority="urgent" if rng.random() < 0.03 else "normal",
                language=rng.choice(["zh", "en"]),
                product_line=product,
                subject=f"request {n}",
                received_at=received,
                policy_version="bench",
            ),
            at,
        )
    ]

    def then(minutes: float, event: EventData) -> None:
        nonlocal at
        at += timedelta(minutes=minutes)
        events.append((event, at))

    assign = {"strategy": "least_loaded", "reason": "bench", "cause": "classified"}
    then(0.1, dispatch.TicketAssigned(**ids, **assign, group_id=route.group_id, agent_id=agent,
                                      policy_version="bench"))  # fmt: skip
    then(rng.uniform(0.5, 5), dispatch.TicketAccepted(**ids, agent_id=agent))
    typical = {"simple": 14.0, "general": 45.0, "complex": 90.0}[complexity]
    answer = dispatch.TicketResponded(**ids, agent_id=agent, message="on it", first_response=True)
    then(rng.lognormvariate(0, 0.6) * typical, answer)
    then(rng.uniform(1, 30), dispatch.WorkStarted(**ids, agent_id=agent))
    if rng.random() < 0.2:
        then(rng.uniform(5, 60), dispatch.WaitingForCustomer(**ids, agent_id=agent, question="?"))
        reply = dispatch.TicketResumed(**ids, cause="customer replied", cause_event_id="reply")
        then(rng.uniform(30, 2880), reply)
    if rng.random() < 0.05:
        return events  # still open
    resolved = dispatch.TicketResolved(**ids, agent_id=agent, resolution="fixed")
    then(rng.lognormvariate(0, 0.8) * 600, resolved)
    if rng.random() < 0.03:
        then(rng.uniform(60, 600), dispatch.TicketReopened(**ids, actor="customer", reason="no"))
        then(rng.uniform(60, 900), resolved)
    then(24 * 60, dispatch.TicketClosed(**ids, actor="system"))
    return events


def _keep(collected: list[RecordedEvent]) -> Any:
    """A recorder keeping the clock events as the projection receives them."""

    def record(stream_id: str, events: Sequence[EventData], **_: Any) -> None:
        for event in events:
            kind = event.event_type()
            collected.append(
                RecordedEvent(0, new_event_id(), stream_id, 0, kind, None, EPOCH, typed=event)
            )

    return record


async def build_history(
    conn: Connection, tickets: int, *, days: int, now: datetime, policy: Policy, version: str
) -> int:
    """Dispatch's events and sla's tables for ``tickets`` tickets received over ``days``."""
    rng = random.Random(19)
    store = EventStore("dispatch", "servicedesk/dispatch")
    board = sla_storage.ClockBoard()
    appended = 0
    for start in range(0, tickets, CHUNK):
        timelines = []
        for n in range(start, min(start + CHUNK, tickets)):
            received = now - timedelta(days=days) + timedelta(seconds=rng.uniform(0, days * 86400))
            timelines.append([(e, at) for e, at in lifecycle(rng, n, received, policy) if at < now])
        appends = [
            StreamAppend(
                ticket_stream(events[0][0].ticket_id),  # type: ignore[attr-defined]
                NO_STREAM,
                [
                    PendingEvent(e, at, e.ticket_id, subject=e.ticket_id)  # type: ignore[attr-defined]
                    for e, at in events
                ],
            )
            for events in timelines
        ]
        async with conn.transaction():
            done = await store.append_many(conn, appends)
            appended += len(done)
            # sla, as its consumer and timer worker would have kept them.
            clock_events: list[RecordedEvent] = []
            record = _keep(clock_events)
            keeper = Timekeeper(policy.sla, version, {}, {})
            for pending, events in zip(appends, timelines, strict=True):
                for item, (event, at) in zip(pending.events, events, strict=True):
                    keeper.fire_due(event.ticket_id, at, record)  # type: ignore[attr-defined]
                    keeper.on(event, at, str(item.id), record)
                keeper.fire_due(pending.events[0].subject or "", now, record)
            await conn.execute("SET LOCAL search_path = sla")
            await sla_storage.save_tickets(conn, list(keeper.tickets.values()))
            await board.apply(conn, clock_events)
    return appended


async def run(tickets: int, days: int, workers: int | None) -> dict[str, Any]:
    shipped, shipped_version, proposed, proposed_version = policies()
    async with bench_world() as (settings, infrastructure):
        conn = await connect(settings.require_database_url())
        try:
            for name in ("dispatch", "sla"):
                await migrate(conn, name, service_migrations(name))
            now: datetime = await conn.fetchval("SELECT clock_timestamp()")
            with Stopwatch() as building:
                events = await build_history(
                    conn, tickets, days=days, now=now, policy=shipped, version=shipped_version
                )
            await conn.execute("ANALYZE")

            meter = CpuMeter([], infrastructure)
            meter.start()
            own = psutil.Process().cpu_times()
            with Stopwatch() as replaying:
                result = await sla_queries.what_if(
                    conn,
                    proposed,
                    proposed_version,
                    since=now - timedelta(days=days),
                    until=now,
                    stories=partial(dispatch_queries.ticket_stories, conn),
                    workers=workers,
                )
            spent = psutil.Process().cpu_times()
            cpu = meter.stop(1)
        finally:
            await conn.close()
    assert result is not None
    return {
        "tickets": result.tickets,
        "clocks": result.clocks,
        "whatif_seconds": round(replaying.seconds, 1),
        "tickets_per_s": replaying.rate(result.tickets),
        "changes": len(result.changes),
        "cpu_s": {
            "reading (this process)": round(spent.user + spent.system - own.user - own.system, 1),
            "replaying (worker processes)": round(
                spent.children_user
                + spent.children_system
                - own.children_user
                - own.children_system,
                1,
            ),
            "postgres": round(cpu.get("postgres", 0.0) / 1000, 1),
            "machine_idle_share": cpu["machine_idle_share"],
        },
        "dispatch_events": events,
        "build_seconds": round(building.seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--workers", type=int, help="Replaying processes (default: one a core).")
    args = parser.parse_args()
    report(asyncio.run(run(args.tickets, args.days, args.workers)))


if __name__ == "__main__":
    main()

"""The console's reads under load: one ticket (``GET /api/tickets/{number}``, with its timeline
and clocks) and the filtered list (``GET /api/tickets?...``), at a steady rate, with 100,000
tickets in its read model.

    python -m bench.console [--tickets 100000] [--rate 200] [--seconds 30]

The console runs as its own process (its own database role, as in production). Its read model
is filled directly (COPY as the owner: tickets, six timeline entries and two clocks each), not
through the broker: this measures the reads, not the projection. Requests are sent open-loop —
each at its scheduled moment whether or not earlier ones answered — and a request's latency is
counted from that moment, so a stall shows in the figures instead of hiding (no coordinated
omission). Half the requests are one ticket, half a list with a filter: status and group, an
agent, the customer's history, SLA at risk, text in the subject; callers are an operator (sees
all) and a supervisor (their groups: the visibility condition). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from bench._support import CpuMeter, bench_world, report, start_service
from services import port_of
from services.policy import Policy, policy_path
from shared.credentials import issue_token
from shared.database import connect
from shared.keys import KeyRing
from shared.policyfile import load_policy
from shared.settings import Settings

STATUSES = (
    ("closed", 70),
    ("resolved", 8),
    ("in_progress", 6),
    ("accepted", 4),
    ("assigned", 3),
    ("queued", 5),
    ("waiting_for_customer", 4),
)
OPEN = ("queued", "assigned", "accepted", "in_progress", "waiting_for_customer")
WORDS = ("打印机卡纸", "Printer jam", "VPN down", "密码重置", "Invoice copy", "蓝屏", "ERP error")
TARGET_P99_MS = 50.0


def rows(count: int, policy: Policy, seed: int) -> dict[str, list[tuple[Any, ...]]]:
    """Tickets, their timelines and clocks, spread over 90 days, as the projections write them."""
    rng = random.Random(seed)
    directory = policy.directory
    members = {g.id: [a.id for a in directory.agents if g.id in a.groups] for g in directory.groups}
    groups = [g for g, agents in members.items() if agents]
    statuses = [s for s, weight in STATUSES for _ in range(weight)]
    now = datetime.now(UTC)
    tickets, timeline, clocks = [], [], []
    for n in range(count):
        ticket_id = uuid.UUID(int=rng.getrandbits(128))
        received = now - timedelta(seconds=rng.uniform(0, 90 * 86400))
        status, group = rng.choice(statuses), rng.choice(groups)
        agent = None if status == "queued" else rng.choice(members[group])
        done = status in ("resolved", "closed")
        sla = rng.choices(("ok", "at_risk", "breached"), (90, 6, 4))[0] if status in OPEN else "ok"
        customer = f"c{rng.randint(1, 20000)}@example.com"
        subject = f"{rng.choice(WORDS)} #{n}"
        responded = received + timedelta(minutes=rng.uniform(1, 60))
        resolved = received + timedelta(hours=rng.uniform(1, 30)) if done else None
        tickets.append(
            (
                ticket_id,
                f"REQ-2026-{n + 1:06d}",
                status,
                group,
                agent,
                rng.choice(("low", "normal", "normal", "high", "urgent")),
                rng.choice(("simple", "general", "general", "complex")),
                "fault",
                rng.random() < 0.05,
                rng.choice(("email", "web", "chat", "phone", "api")),
                rng.choice(("zh", "en")),
                f"email:{customer}",
                f'{{"name": "客户 {n}", "email": "{customer}", "phone": null, '
                '"customer_id": null, "tier": null}',
                subject,
                "描述 description " * 8,
                received,
                received if status == "queued" else None,
                responded if agent else None,
                agent,
                resolved,
                agent if done else None,
                resolved if status == "closed" else None,
                rng.choice((5, 5, 5, 4, 4, 3)) if done and rng.random() < 0.6 else None,
                resolved if done else None,
                sla,
                received + timedelta(hours=8) if sla != "ok" else None,
                resolved or responded,
            )
        )
        kinds = ("ticket.received", "ticket.triaged", "ticket.classified", "ticket.assigned")
        for k, kind in enumerate((*kinds, "ticket.accepted", "notification.sent")):
            timeline.append(
                (
                    ticket_id,
                    n * 6 + k,
                    received + timedelta(seconds=k),
                    "dispatch",
                    kind,
                    agent,
                    {"group_id": group},
                    None,
                )
            )
        for metric in ("first_response", "resolution"):
            clocks.append(
                (
                    f"clock-{ticket_id}-{metric}",
                    ticket_id,
                    metric,
                    group,
                    "met" if done else "running",
                    0.0,
                    received + timedelta(hours=8),
                )
            )
    return {"tickets": tickets, "timeline": timeline, "clocks": clocks}


COLUMNS = {
    "tickets": (
        "ticket_id", "number", "status", "group_id", "agent_id", "priority", "complexity",
        "category", "complaint", "channel", "language", "customer_key", "customer", "subject",
        "description", "received_at", "queued_at", "first_response_at", "first_responder",
        "resolved_at", "resolved_by", "closed_at", "satisfaction", "satisfied_at", "sla",
        "sla_deadline", "updated_at",
    ),
    "timeline": ("ticket_id", "position", "at", "service", "kind", "actor", "facts", "said"),
    "clocks": ("clock_id", "ticket_id", "metric", "group_id", "status", "warned", "deadline"),
}  # fmt: skip


async def fill(settings: Settings, count: int, policy: Policy) -> float:
    """Fill the console's read model directly; seconds it took."""
    started = time.perf_counter()
    conn = await connect(settings.require_database_url())
    await conn.set_type_codec(  # COPY is binary: jsonb's binary form is a version byte, then text
        "jsonb",
        encoder=lambda value: b"\x01" + json.dumps(value).encode(),
        decoder=lambda data: json.loads(data[1:]),
        schema="pg_catalog",
        format="binary",
    )
    try:
        for table, records in rows(count, policy, seed=7).items():
            await conn.copy_records_to_table(
                table, schema_name="console", columns=COLUMNS[table], records=records
            )
        await conn.execute(
            "INSERT INTO console.agents (agent_id, name, role, groups, capacity, on_shift, "
            "updated_at) SELECT a, b, c, d::text[], e, f, g FROM unnest($1::text[], $2::text[], "
            "$3::text[], $4::text[], $5::int[], $6::bool[], $7::timestamptz[]) "
            "AS a(a, b, c, d, e, f, g) ON CONFLICT DO NOTHING",
            *_agents(policy),
        )
        for table in (*COLUMNS, "agents"):
            await conn.execute(f"ANALYZE console.{table}")
    finally:
        await conn.close()
    return time.perf_counter() - started


def _agents(policy: Policy) -> list[list[Any]]:
    agents = policy.directory.agents
    now = datetime.now(UTC)
    return [
        [a.id for a in agents],
        [a.name for a in agents],
        [a.role for a in agents],
        # unnest flattens nested arrays: the groups go as one text, a PostgreSQL array literal.
        ["{" + ",".join(a.groups) + "}" for a in agents],
        [a.capacity for a in agents],
        [True for _ in agents],
        [now for _ in agents],
    ]


Planned = list[tuple[str, str, dict[str, Any]]]
"""(kind, path, query) of each request, in the order they are sent."""


def requests(count: int, tickets: int, policy: Policy, seed: int) -> Planned:
    """(kind, path, params) of each request, in the order they are sent."""
    rng = random.Random(seed)
    groups = [g.id for g in policy.directory.groups]
    agents = [a.id for a in policy.directory.agents]
    filters: list[Callable[[], dict[str, Any]]] = [
        lambda: {"status": rng.choice(OPEN), "group": rng.choice(groups)},
        lambda: {"status": ["assigned", "accepted", "in_progress"], "agent": rng.choice(agents)},
        lambda: {"customer": f"c{rng.randint(1, 20000)}@example.com"},
        lambda: {"sla": "at_risk"},
        lambda: {"q": rng.choice(WORDS)},
        lambda: {"group": rng.choice(groups), "limit": 50},
    ]
    planned: Planned = []
    for _ in range(count):
        if rng.random() < 0.5:
            planned.append(("ticket", f"/api/tickets/REQ-2026-{rng.randint(1, tickets):06d}", {}))
        else:
            planned.append(("list", "/api/tickets", rng.choice(filters)()))
    return planned


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    cut = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": round(cut[49], 2),
        "p95_ms": round(cut[94], 2),
        "p99_ms": round(cut[98], 2),
        "max_ms": round(ordered[-1], 2),
        "count": len(ordered),
    }


class Connection:
    """One keep-alive HTTP/1.1 connection, as lean as a load generator must be: on two shared
    cores a full client (httpx: a few ms of CPU per request, worse with a backlog) would measure
    itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        return cls(*await asyncio.open_connection(host, port))

    async def get(self, target: str, token: str) -> int:
        """The status of ``GET target`` (the body is read and dropped)."""
        self.writer.write(
            f"GET {target} HTTP/1.1\r\nHost: console\r\nAuthorization: Bearer {token}\r\n"
            "Accept: application/json\r\n\r\n".encode()
        )
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def load(
    port: int, tokens: list[str], planned: Planned, rate: float, connections: int = 32
) -> tuple[dict[str, list[float]], dict[int, int], float]:
    """Send ``planned`` open-loop at ``rate`` per second; latencies (ms, from each request's
    scheduled moment) by kind, and the statuses. A request waiting for a free connection waits
    on the clock: a server that falls behind shows in the figures."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open("127.0.0.1", port))
    latencies: dict[str, list[float]] = {"ticket": [], "list": []}
    statuses: dict[int, int] = {}

    async def one(n: int, scheduled: float) -> None:
        kind, path, params = planned[n]
        # One ticket as the operator; lists alternately as the operator and a supervisor.
        caller = tokens[0] if kind == "ticket" else tokens[n % len(tokens)]
        target = f"{path}?{urlencode(params, doseq=True)}" if params else path
        connection = await pool.get()
        try:
            status = await connection.get(target, caller)
        finally:
            pool.put_nowait(connection)
        latencies[kind].append((time.perf_counter() - scheduled) * 1000)
        statuses[status] = statuses.get(status, 0) + 1

    for warm in range(100):  # connections, prepared statements, the tokens' first reading
        await one(warm % len(planned), time.perf_counter())
    latencies = {"ticket": [], "list": []}
    statuses.clear()
    started = time.perf_counter()
    tasks = []
    for n in range(len(planned)):
        scheduled = started + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    while not pool.empty():
        pool.get_nowait().close()
    return latencies, statuses, elapsed


async def run(tickets: int, rate: float, seconds: float) -> dict[str, Any]:
    async with bench_world() as (world, infra):
        # The console's consumers poll at production's pace (the embedded broker's 10 ms would
        # spend the shared cores on empty fetches): this measures its reads.
        settings = world.replace(kafka_fetch_max_wait_ms=500)
        policy = load_policy(policy_path(settings), Policy)[0]
        process = await start_service("console", settings)
        try:
            filled = await fill(settings, tickets, policy)
            key = KeyRing.from_settings(settings).issuer_of("agents")
            assert key is not None
            tokens = [
                issue_token(key, who, now=datetime.now(UTC), ttl=timedelta(hours=1))
                for who in ("ops", "qian.hui")
            ]
            planned = requests(int(rate * seconds), tickets, policy, seed=11)
            meter = CpuMeter([process.pid], infra)
            meter.start()
            port = port_of(settings, "console")
            latencies, statuses, elapsed = await load(port, tokens, planned, rate)
            cpu = meter.stop(len(planned))
        finally:
            process.terminate()
            await process.wait()
    everything = [*latencies["ticket"], *latencies["list"]]
    figures = _percentiles(everything)
    return {
        "benchmark": "console",
        "tickets_stored": tickets,
        "fill_s": round(filled, 1),
        "offered_per_s": rate,
        "achieved_per_s": round(len(everything) / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "one_ticket": _percentiles(latencies["ticket"]),
        "filtered_list": _percentiles(latencies["list"]),
        "all": figures,
        "target_p99_ms": TARGET_P99_MS,
        "meets_target": figures["p99_ms"] <= TARGET_P99_MS,
        "cpu_ms_per_request": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    report(asyncio.run(run(args.tickets, args.rate, args.seconds)))


if __name__ == "__main__":
    main()

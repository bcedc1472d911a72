"""SLA timers: arming rate, firing lateness and the sla process's memory with 100,000 timers.

``python -m bench.sla [--timers 100000] [--lead 90] [--window 120]``

The sla service runs as its own process (real database clock, the shipped timer worker). The
benchmark arms ``--timers`` clocks through sla's own consumer code (the handler, the unit of
work, the event store and the clock projection; Kafka is left out, it is measured elsewhere), in
transactions of 500 tickets, each ticket one first-response clock whose timer falls ``--lead``
seconds after the benchmark started plus a spread over ``--window`` seconds. Then it waits until
every timer fired (a breach and a level-1 escalation each) and reads, from the events sla
recorded, how late each fired: the time of the recording transaction minus the due time.

Prints ``timers_armed_per_s``, ``fire_lateness_p50_ms``, ``fire_lateness_p99_ms`` (targets: p99
≤ 1,000 ms), ``timers_fired_per_s`` and the sla process's RSS before arming, after arming, and
after every timer fired (``rss_mb_before`` / ``rss_mb_after``: flat, the timers live in
PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from bench._support import bench_settings, marks_of, report, start_service, written_policy
from services.dispatch.events import TicketClassified
from services.policy import DEFAULT_POLICY, policy_schedule
from services.sla.app import build
from services.sla.handlers import LifecycleEvents
from shared.consumer import Delivered, Inbound
from shared.database import create_pool
from shared.deadletter import Record
from shared.events import Envelope, new_event_id
from shared.local.ports import free_port
from shared.settings import Settings
from shared.unit_of_work import UnitOfWork

BATCH = 500
_RECORD = Record("bench", 0, 0, None, b"", ())


def bench_policy(target_s: float) -> Path:
    """The shipped policy with one first-response clock per ticket, no warnings, level 1 at
    the breach: one timer per ticket."""
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    sla = policy["sla"]
    sla["metrics"] = {"first_response": {"starts": "dispatched", "fulfilled_by": ["responded"]}}
    sla["targets"] = [{"metric": "first_response", "target": f"{target_s}s", "calendar": "always"}]
    sla["warnings"] = []
    sla["escalation"] = [{"level": 1, "after": "0s"}]
    return written_policy(policy)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def classified(n: int, at: datetime) -> Inbound[Delivered]:
    ticket_id = str(new_event_id())
    data = TicketClassified(
        ticket_id=ticket_id,
        number=f"REQ-2026-{n:07d}",
        group_id="front-line",
        route="complexity:simple",
        reason="bench",
        complexity="simple",
        category="inquiry",
        complaint=False,
        complaint_severity="none",
        channel="phone",
        priority="normal",
        language="en",
        subject="bench",
        received_at=at,
        policy_version="bench",
    )
    envelope = Envelope(
        id=new_event_id(),
        source="servicedesk/dispatch",
        type=data.event_type(),
        subject=ticket_id,
        time=at,
        streamid=f"ticket-{ticket_id}",
        streamversion=1,
        correlationid=ticket_id,
        data=data.model_dump(mode="json"),
    )
    return Inbound(_RECORD, Delivered(envelope, data), str(envelope.id))


async def run(timers: int, lead: float, window: float) -> dict[str, Any]:
    target_s = 30.0
    policy = bench_policy(target_s)
    async with bench_settings(sla_port=free_port(), policy_file=policy) as settings:
        process = await start_service("sla", settings)
        try:
            async with marks_of(settings, "dispatch"):
                return await measure(
                    settings, process, timers=timers, lead=lead, window=window, target_s=target_s
                )
        finally:
            process.terminate()
            await process.wait()


async def measure(
    settings: Settings,
    process: asyncio.subprocess.Process,
    *,
    timers: int,
    lead: float,
    window: float,
    target_s: float,
) -> dict[str, Any]:
    service = build(settings)
    handler = LifecycleEvents(policy_schedule(settings))
    pool = await create_pool(settings, schema="sla", application="bench-sla")
    rss_before = rss_mb(process.pid)
    start: datetime = await pool.fetchval("SELECT clock_timestamp()")
    first_due = start + timedelta(seconds=lead)
    began = time.perf_counter()
    samples = []
    for offset in range(0, timers, BATCH):
        if offset % max(BATCH, timers // 4 // BATCH * BATCH) == 0:
            samples.append(rss_mb(process.pid))
        messages = []
        for n in range(offset, min(offset + BATCH, timers)):
            due = first_due + timedelta(seconds=window * n / timers)
            messages.append(classified(n, due - timedelta(seconds=target_s)))
        async with pool.acquire() as conn, conn.transaction():
            uow = UnitOfWork(conn, service.store, start, service.projections)
            await handler.handle(uow, messages)
            await uow.flush()
    armed_s = time.perf_counter() - began
    rss_armed = rss_mb(process.pid)
    armed_at: datetime = await pool.fetchval("SELECT clock_timestamp()")
    deadline = time.monotonic() + lead + window + 600
    while time.monotonic() < deadline:
        left = await pool.fetchval("SELECT count(*) FROM clocks WHERE due_at IS NOT NULL")
        if left == 0:
            break
        await asyncio.sleep(0.5)
    lateness = await pool.fetchrow(
        "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY late), "
        "percentile_cont(0.99) WITHIN GROUP (ORDER BY late), max(late), "
        "min(occurred_at), max(occurred_at) FROM ("
        "  SELECT occurred_at, extract(epoch FROM occurred_at - "
        "    (envelope::jsonb #>> '{data,due_at}')::timestamptz) * 1000 AS late "
        "  FROM events WHERE type = 'servicedesk.sla.clock_breached.v1') fired"
    )
    rss_after = rss_mb(process.pid)
    await pool.close()
    assert lateness is not None
    fired, first_fire, last_fire = lateness[0], lateness[4], lateness[5]
    p50, p99, worst = (None if v is None else float(v) for v in lateness[1:4])
    fire_span = (last_fire - first_fire).total_seconds() if fired else 0.0
    return {
        "benchmark": "sla",
        "timers": timers,
        "timers_fired": fired,
        "timers_armed_per_s": round(timers / armed_s),
        "arming_finished_before_first_due_s": round((first_due - armed_at).total_seconds(), 1),
        "due_window_s": window,
        "offered_due_per_s": round(timers / window),
        "timers_fired_per_s": round(fired / fire_span) if fire_span else None,
        "fire_lateness_p50_ms": round(p50, 1) if p50 is not None else None,
        "fire_lateness_p99_ms": round(p99, 1) if p99 is not None else None,
        "fire_lateness_max_ms": round(worst, 1) if worst is not None else None,
        "rss_mb_before": rss_before,
        "rss_mb_while_arming": samples,
        "rss_mb_armed": rss_armed,
        "rss_mb_after": rss_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--timers", type=int, default=100_000)
    parser.add_argument("--lead", type=float, default=90.0, help="Seconds until the first due.")
    parser.add_argument("--window", type=float, default=120.0, help="Seconds the dues spread.")
    args = parser.parse_args()
    report(asyncio.run(run(args.timers, args.lead, args.window)))


if __name__ == "__main__":
    main()

"""What sealing costs intake's batches: the same path in clear and sealed, alternated batch by
batch in one process.

    python -m bench.sealing [--requests 24000] [--batch 100]

``bench.intake --compare`` prices sealing at the whole service, the two variants side by side
as processes; this takes the consumer's batch path alone. Both variants run in one process
against the real (embedded) PostgreSQL — intake as ``python -m services.intake`` builds it, and
as ``bench.clear_intake`` does with no key store and no field sealed — and each is handed
alternate batches of demo requests through the consumer's batch path: decode, claim, the
duplicate check, triage, numbers, the customers' subjects and sealing (or not), the events
appended and projected, commit. Whatever the machine does weighs on both alike, batch by batch.
Kafka's fetch and the relay's publishing are not in it (the records are the same; sealed ones
are about 480 bytes a ticket larger), so its ratio is over a smaller whole than the service's.

Prints the CPU microseconds a request of this process (PostgreSQL's CPU is not in them), clear
and sealed, ``sealing_cpu_pct`` (their ratio) and the median and quartiles of each pair of
batches' ratio; the first tenth of the batches warms up and is not counted. The receipts each
variant recorded are counted, and the run fails if one is not as its variant records them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench._support import bench_settings, report
from bench.clear_intake import ClearCustomers
from bench.clear_intake import _service as clear_service
from bench.intake import requests
from services import service_migrations
from services.intake import app, follow_ups, handlers
from services.intake.contract import INCOMING_TOPIC
from services.intake.customers import Customers
from services.intake.events import TicketReceived
from shared.consumer import ConsumerRunner
from shared.database import connect
from shared.deadletter import Record
from shared.privileges import provision, role_url, service_role
from shared.service import Service, settle_garbage_collector
from shared.settings import Settings


def records(settings: Settings, total: int) -> list[Record]:
    topic = settings.topic(INCOMING_TOPIC)
    now = int(time.time() * 1000)
    return [
        Record(topic, 0, offset, key.encode(), value, (), now)
        for offset, (key, value) in enumerate(requests(total, "sealing"))
    ]


def customers_as(kind: type[Customers]) -> None:
    """The customers intake's handlers meet: sealed (intake's own) or clear (the variant)."""
    for module in (handlers, follow_ups):
        vars(module)["Customers"] = kind


def requests_runner(
    build: Callable[[Settings], Service], settings: Settings
) -> ConsumerRunner[Any]:
    service = build(settings)
    return next(c for c in service.consumers if c.subscription.name == "requests")


async def run(total: int, batch: int) -> dict[str, Any]:
    async with bench_settings() as settings:
        conn = await connect(settings.require_database_url())
        try:
            await provision(conn, "intake", service_migrations("intake"))
        finally:
            await conn.close()
        own = settings.replace(
            database_url=role_url(settings.require_database_url(), service_role("intake"))
        )
        sealed = requests_runner(app.build, own)
        vars(app)["Service"] = clear_service
        try:
            clear = requests_runner(app.build, own)
        finally:
            vars(app)["Service"] = Service
        for runner in (sealed, clear):
            await runner.service._start_storage()
        settle_garbage_collector()
        spent: dict[str, list[float]] = {"clear": [], "sealed": []}
        modes: dict[str, str] = {}
        try:
            given = records(settings, total)
            for pair, at in enumerate(range(0, len(given) - 2 * batch + 1, 2 * batch)):
                halves = [given[at : at + batch], given[at + batch : at + 2 * batch]]
                order = [("clear", clear), ("sealed", sealed)][:: 1 if pair % 2 else -1]
                for (mode, runner), some in zip(order, halves, strict=True):
                    customers_as(ClearCustomers if mode == "clear" else Customers)
                    modes.update((r.key.decode(), mode) for r in some if r.key is not None)
                    started = time.process_time()
                    await runner._process(None, some)
                    spent[mode].append((time.process_time() - started) / len(some))
            receipts = await check_receipts(sealed.service, modes)
        finally:
            customers_as(Customers)
            for runner in (sealed, clear):
                await runner.service._close_storage()
            gc.collect()
    warm = len(spent["clear"]) // 10
    counted = {mode: runs[warm:] for mode, runs in spent.items()}
    mean = {mode: statistics.fmean(runs) for mode, runs in counted.items()}
    ratios = [s / c - 1 for c, s in zip(counted["clear"], counted["sealed"], strict=True)]
    quartiles = statistics.quantiles(ratios, n=4)
    return {
        "benchmark": "sealing",
        "requests": total,
        "batch": batch,
        "pairs_counted": len(ratios),
        "clear_us": round(mean["clear"] * 1e6, 1),
        "sealed_us": round(mean["sealed"] * 1e6, 1),
        "sealing_cpu_pct": round(100 * (mean["sealed"] / mean["clear"] - 1), 1),
        "pair_pct_median": round(100 * statistics.median(ratios), 1),
        "pair_pct_quartiles": [round(100 * quartiles[0], 1), round(100 * quartiles[2], 1)],
        "receipts": receipts,
    }


async def check_receipts(service: Service, modes: dict[str, str]) -> dict[str, int]:
    """Receipts recorded by each variant; an error if one was not as its batch's variant records
    it (sealed in a clear batch, or clear in a sealed one): the run measured something else."""
    rows = await service.pool.fetch(
        "SELECT envelope->'data'->>'channel_message_id', "
        "envelope->'data'->'description'->>'ct' IS NOT NULL FROM events WHERE type = $1",
        TicketReceived.event_type(),
    )
    counted = {"clear": 0, "sealed": 0}
    for message_id, is_sealed in rows:
        mode = modes[message_id]
        if is_sealed != (mode == "sealed"):
            how = "sealed" if is_sealed else "in clear"
            raise RuntimeError(f"a {mode} batch recorded a receipt {how}")
        counted[mode] += 1
    return counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=24_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    report(asyncio.run(run(args.requests, args.batch)))


if __name__ == "__main__":
    main()

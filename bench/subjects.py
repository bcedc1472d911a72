"""What intake's key store costs its process a request: the customers' subjects and keys.

    python -m bench.subjects [--requests 30000] [--batch 100]

Issue 17 prices sealing at the whole of intake (``bench.intake --compare``), where one run
differs from the next by a fifth; this takes one part apart, in one process against the real
(embedded) PostgreSQL, as intake's batches meet it: ``Customers.of`` (an HMAC per identity, one
look-up of the batch's subjects, new ones made, wrapped and inserted) and ``Customers.sealed``
(every personal text sealed), over ``--requests`` demo requests in batches of ``--batch``.

Prints, as CPU microseconds a request of this process (PostgreSQL's CPU is not in them):
``first_meeting_us`` (the first pass: the demo's customers met for the first time as the
traffic brings them, a third of requests or more), ``known_us`` (the same requests again:
every customer known, a row read per customer and no key unwrapped twice) and ``sealing_us``
(``Customers.sealed`` alone, the keys at hand), and the share of requests that made a new subject.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from bench._support import bench_settings, report
from services import service_migrations
from services.intake.contract import Request, read_request
from services.intake.customers import Customers
from services.intake.demo import DemoTraffic
from shared.database import Connection, connect
from shared.keystore import KeyStore, MasterKey
from shared.privileges import provision


def demo_requests(count: int) -> list[Request]:
    traffic = DemoTraffic(seed=42, run="subjects")
    out: list[Request] = []
    while len(out) < count:
        read = read_request(json.dumps(traffic.request()).encode())
        if isinstance(read, Request):  # the demo's deliberate bad ones are not requests
            out.append(read)
    return out


async def meet(
    store: KeyStore, conn: Connection, requests: Sequence[Request], batch: int
) -> tuple[float, float]:
    """CPU seconds of this process to meet every request's customer, and to seal its texts."""
    meeting = sealing = 0.0
    for at in range(0, len(requests), batch):
        some = requests[at : at + batch]
        started = time.process_time()
        async with conn.transaction():
            customers = await Customers.of(store, conn, [r.customer for r in some])
        met = time.process_time()
        for request in some:
            customers.sealed(request)
        meeting, sealing = meeting + met - started, sealing + time.process_time() - met
    return meeting, sealing


async def run(total: int, batch: int) -> dict[str, Any]:
    async with bench_settings() as settings:
        conn = await connect(settings.require_database_url())
        try:
            await provision(conn, "intake", service_migrations("intake"))
            await conn.execute("SET search_path TO intake")
            store = KeyStore(MasterKey.from_settings(settings))
            requests = demo_requests(total)
            first, _ = await meet(store, conn, requests, batch)
            subjects = await conn.fetchval("SELECT count(*) FROM subject_keys")
            known, sealing = await meet(store, conn, requests, batch)
            if await conn.fetchval("SELECT count(*) FROM subject_keys") != subjects:
                raise RuntimeError("customers met again were made subjects again")
        finally:
            await conn.close()
    return {
        "benchmark": "subjects",
        "requests": total,
        "batch": batch,
        "new_subject_share": round(subjects / total, 3),
        "first_meeting_us": round(first / total * 1e6, 1),
        "known_us": round(known / total * 1e6, 1),
        "sealing_us": round(sealing / total * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    report(asyncio.run(run(args.requests, args.batch)))


if __name__ == "__main__":
    main()

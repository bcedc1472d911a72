"""Two known-good ways to make "follow the log by position" safe, measured side by side.

    python -m bench.ordering [--writers 8] [--appends 300] [--delay-ms 2]

``lock``: what ``shared/sql`` does — appends take an EXCLUSIVE lock on the events table, so
positions are handed out in commit order and a reader needs only ``position > checkpoint``.
``xid8``: appends run concurrently and record their transaction id; a reader only reads rows
whose transaction is older than every transaction still running
(``transaction_id < pg_snapshot_xmin(pg_current_snapshot())``) and orders by
(transaction id, position). ``none``: neither, to show what goes wrong.

Each writer appends one event per transaction and keeps the transaction open a random
0..``delay`` ms after appending (the "commit delay" that exposes the race). A reader follows the
log while they write. Prints, per design, appends per second and whether the reader saw every
event exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import random

import asyncpg

from bench._support import Stopwatch, bench_settings, report
from shared.database import connect

DESIGNS = {
    "lock": (
        "CREATE TABLE log_lock (position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "payload text NOT NULL)",
        "LOCK TABLE log_lock IN EXCLUSIVE MODE; INSERT INTO log_lock (payload) VALUES ('x')",
        "SELECT position, $2::bigint FROM log_lock WHERE position > $1 ORDER BY position LIMIT 500",
    ),
    "xid8": (
        "CREATE TABLE log_xid8 (position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "txid xid8 NOT NULL DEFAULT pg_current_xact_id(), payload text NOT NULL); "
        "CREATE INDEX ON log_xid8 (txid, position)",
        "INSERT INTO log_xid8 (payload) VALUES ('x')",
        "SELECT position, txid::text::bigint FROM log_xid8 "
        "WHERE (txid::text::bigint, position) > ($2, $1) "
        "AND txid < pg_snapshot_xmin(pg_current_snapshot()) "
        "ORDER BY txid, position LIMIT 500",
    ),
    "none": (
        "CREATE TABLE log_none (position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "payload text NOT NULL)",
        "INSERT INTO log_none (payload) VALUES ('x')",
        "SELECT position, $2::bigint FROM log_none WHERE position > $1 ORDER BY position LIMIT 500",
    ),
}


async def measure(
    url: str, design: str, writers: int, appends: int, delay_ms: float
) -> dict[str, object]:
    create, append, read = DESIGNS[design]
    setup = await connect(url)
    await setup.execute(create)
    await setup.close()
    rng = random.Random(1)
    done = asyncio.Event()
    seen: list[int] = []

    async def writer() -> None:
        conn = await asyncpg.connect(url)
        try:
            for _ in range(appends):
                async with conn.transaction():
                    await conn.execute(append)
                    await asyncio.sleep(rng.random() * delay_ms / 1000)
        finally:
            await conn.close()

    async def reader() -> None:
        conn = await asyncpg.connect(url)
        position, txid = 0, 0
        try:
            while True:
                finished = done.is_set()
                rows = await conn.fetch(read, position, txid)
                for p, t in rows:
                    seen.append(p)
                    position, txid = p, t
                if not rows and finished:
                    return
                if not rows:
                    await asyncio.sleep(0.001)
        finally:
            await conn.close()

    following = asyncio.create_task(reader())
    with Stopwatch() as watch:
        await asyncio.gather(*(writer() for _ in range(writers)))
    done.set()
    await following
    total = writers * appends
    return {
        "appends_per_s": watch.rate(total),
        "reader_saw": len(seen),
        "reader_missed": total - len(set(seen)),
        "reader_duplicates": len(seen) - len(set(seen)),
    }


async def main(writers: int, appends: int, delay_ms: float) -> None:
    results = {}
    async with bench_settings() as settings:
        for design in DESIGNS:
            results[design] = await measure(
                settings.require_database_url(), design, writers, appends, delay_ms
            )
    report({"writers": writers, "appends_each": appends, "commit_delay_ms": delay_ms, **results})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--delay-ms", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(main(args.writers, args.appends, args.delay_ms))

"""Projections: fed in the appending transaction, rebuildable from the log alone."""

from __future__ import annotations

import pytest

from shared.database import connect
from shared.projection import catch_up, rebuild
from shared.settings import Settings
from tests.support import probe
from tests.support.kafka import KafkaProbe
from tests.support.services import running
from tests.support.waiting import eventually


@pytest.mark.asyncio
async def test_a_rebuilt_projection_equals_the_live_one(
    settings: Settings, kafka: KafkaProbe
) -> None:
    service = probe.build(settings, port=0, tally=False)
    async with running(service):
        for i in range(60):
            await kafka.publish(
                probe.COMMANDS, probe.command(f"p-{i}", f"c{i % 7}", i), key=f"c{i % 7}"
            )

        async def events() -> int:
            return int(await service.pool.fetchval("SELECT count(*) FROM events"))

        await eventually(events, lambda n: n == 60)
        projection = service.projections[0]
        async with service.pool.acquire() as conn:
            live = await conn.fetch("SELECT counter, total FROM tallies ORDER BY counter")
            assert len(live) == 7
            assert sum(r["total"] for r in live) == sum(range(60))
            assert await projection.checkpoint(conn) == await service.store.head(conn)

            await conn.execute("UPDATE tallies SET total = -1")  # corrupt it...
            replayed = await rebuild(conn, service.store, projection)
            rebuilt = await conn.fetch("SELECT counter, total FROM tallies ORDER BY counter")
    assert replayed == 60
    assert rebuilt == live


@pytest.mark.asyncio
async def test_a_new_projection_catches_up_from_the_start(
    settings: Settings, kafka: KafkaProbe
) -> None:
    service = probe.build(settings, port=0, tally=False)
    async with running(service):
        for i in range(10):
            await kafka.publish(probe.COMMANDS, probe.command(f"n-{i}", "n"), key="n")

        async def events() -> int:
            return int(await service.pool.fetchval("SELECT count(*) FROM events"))

        await eventually(events, lambda n: n == 10)
    conn = await connect(settings.require_database_url(), schema="probe")
    try:
        projection = service.projections[0]
        await conn.execute("TRUNCATE tallies")
        await conn.execute("DELETE FROM checkpoints WHERE name = $1", projection.checkpoint_name)
        assert await catch_up(conn, service.store, projection) == 10
        assert await catch_up(conn, service.store, projection) == 0
        assert await conn.fetchval("SELECT total FROM tallies WHERE counter = 'n'") == 10
    finally:
        await conn.close()

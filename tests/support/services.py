"""Running a :class:`shared.service.Service` inside the test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.service import Service
from tests.support.waiting import eventually


@asynccontextmanager
async def running(service: Service, timeout: float = 60.0) -> AsyncIterator[Service]:
    """Start the service (storage, consumers, relay, workers) and wait until it is ready."""
    await service.app.start()
    try:
        await eventually(
            service.readiness,
            lambda checks: all(checks.values()),
            timeout=timeout,
            what=f"{service.name} readiness",
        )
        yield service
    finally:
        await service.app.stop()

"""A service process's garbage collector: startup objects frozen, young collections rarer."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import MutableMapping
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from shared.service import (
    READY_FOR_S,
    YOUNG_GENERATION_THRESHOLD,
    Service,
    settle_garbage_collector,
)
from shared.settings import Settings
from tests.support import probe
from tests.support.asgi import get_scope, no_body
from tests.support.services import running
from tests.support.waiting import eventually


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.mark.unit
def test_settled_collector_freezes_startup_objects_and_still_frees_cycles() -> None:
    before = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD
        assert gc.get_freeze_count() > 0

        # Garbage made after startup is still collected: a reference cycle goes away.
        first, second = _Node(), _Node()
        first.other, second.other = second, first
        alive = weakref.ref(first)
        del first, second
        gc.collect()
        assert alive() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.asyncio
async def test_a_failed_background_task_is_restarted_with_backoff_named_counted_and_logged(
    settings: Settings,
) -> None:
    """Any exception — here the KafkaError a broker outage raises — ends one run of a task:
    ``/ready`` names it while it is down, ``desk_task_up`` says 0, the restart is counted and a
    log line says why; then it runs again."""
    fail = asyncio.Event()
    runs = 0

    async def watch_the_broker(service: Service) -> None:
        nonlocal runs
        runs += 1
        await fail.wait()
        fail.clear()
        raise KafkaTimeoutError("no answer from the broker")

    fast = settings.replace(task_restart_backoff="300ms", task_restart_backoff_max="1s")
    service = probe.build(fast, port=0, tally=False, workers=[watch_the_broker])
    labels = {"service": "probe", "task": "watch_the_broker"}
    async with running(service):
        assert (await service.readiness())["watch_the_broker"] is True
        before = REGISTRY.get_sample_value("desk_task_restarts_total", labels) or 0
        with capture_logs() as logs:
            fail.set()
            down = await eventually(
                service.readiness, lambda checks: not checks["watch_the_broker"], interval=0.01
            )
            assert REGISTRY.get_sample_value("desk_task_up", labels) == 0
            await eventually(service.readiness, lambda checks: all(checks.values()))
        assert REGISTRY.get_sample_value("desk_task_up", labels) == 1
    assert down["watch_the_broker"] is False
    assert runs == 2
    assert REGISTRY.get_sample_value("desk_task_restarts_total", labels) == before + 1
    [line] = [entry for entry in logs if entry.get("task") == "watch_the_broker"]
    assert line["log_level"] == "error"
    assert "KafkaTimeoutError" in line["error"] and "no answer from the broker" in line["error"]
    assert line["retry_in_s"] == pytest.approx(0.3)


async def _status(app: Any, path: str) -> int:
    """``path``'s answer from ``app``, called as a server would (ASGI)."""
    started: list[int] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.append(message["status"])

    await app(get_scope(path), no_body, send)
    return started[0]


@pytest.mark.asyncio
async def test_a_flood_of_readiness_probes_costs_one_check_a_second(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/ready`` needs no token (probes; on the console's port, anyone): fifty at once make one
    database round trip and one broker ping, and a probe after the window checks afresh."""
    service = probe.build(settings, port=0, tally=False)
    async with running(service):
        checks = 0
        check = service.readiness

        async def counted() -> dict[str, bool]:
            nonlocal checks
            checks += 1
            return await check()

        monkeypatch.setattr(service, "readiness", counted)
        flood = await asyncio.gather(*(_status(service.app, "/ready") for _ in range(50)))
        assert (set(flood), checks) == ({200}, 1)
        await asyncio.sleep(READY_FOR_S + 0.1)
        assert (await _status(service.app, "/ready"), checks) == (200, 2)

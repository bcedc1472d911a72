"""A running desk for console tests: intake and dispatch (and whatever else a test asks for)
as in production, the console served over real HTTP by uvicorn, and helpers to call it as an
agent desk would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from services import build_service, port_of
from shared.service import Service
from shared.settings import Settings
from tests.intake.requests import encode, intake_clock, valid
from tests.support.credentials import token
from tests.support.kafka import KafkaProbe
from tests.support.services import migrated, running
from tests.support.waiting import eventually

SIMPLE = {
    "subject": "请问如何重置密码",
    "description": "How do I reset my password?",
    "product_line": None,
}
"""A simple inquiry: the front line's (li.na, wang.qiang, emma.jones; zhao.lei supervises)."""
PRINTER = {"subject": "打印机卡纸", "product_line": "printer"}
"""A general fault of the printing group (zhou.min, mark.chen; qian.hui supervises)."""


@dataclass
class Desk:
    settings: Settings
    console: Service
    kafka: KafkaProbe
    url: str
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, actor: str | None = None, **claims: Any) -> httpx.AsyncClient:
        """An HTTP client of the console, carrying ``actor``'s token (none: no token)."""
        headers = (
            {"Authorization": f"Bearer {token(self.settings, actor, **claims)}"} if actor else {}
        )
        client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)
        self.clients.append(client)
        return client

    async def request(self, n: int, **changes: Any) -> None:
        """A customer's request, as a channel adapter sends it."""
        body = valid(f"console-{n}", **changes)
        await self.kafka.publish("requests.incoming", encode(body), key=f"email:console-{n}")

    async def tickets(self, actor: str, count: int, **params: Any) -> list[dict[str, Any]]:
        """Wait until ``actor`` sees ``count`` tickets (matching ``params``)."""
        client = self.client(actor)

        async def listed() -> list[dict[str, Any]]:
            response = await client.get("/api/tickets", params={"limit": 200, **params})
            assert response.status_code == 200, response.text
            items: list[dict[str, Any]] = response.json()["items"]
            return items

        return await eventually(listed, lambda items: len(items) >= count, what="tickets listed")

    async def decided(self, client: httpx.AsyncClient, command_id: str) -> dict[str, Any]:
        """dispatch's decision on a command sent through the console."""

        async def status() -> dict[str, Any]:
            found: dict[str, Any] = (await client.get(f"/api/commands/{command_id}")).json()
            return found

        return await eventually(status, lambda s: s.get("status") != "pending", what="decision")


@asynccontextmanager
async def served(service: Service) -> AsyncIterator[str]:
    """The service over HTTP, as ``python -m services.<name>`` serves it (migrated first)."""
    service.database_url = await migrated(service.settings, service.name, service.migrations)
    config = uvicorn.Config(
        service.app, host="127.0.0.1", port=service.port, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{service.port}"
    try:
        async with httpx.AsyncClient() as client:

            async def ready() -> int:
                with contextlib.suppress(httpx.HTTPError):
                    return (await client.get(f"{url}/ready")).status_code
                if serving.done():
                    serving.result()
                return 0

            await eventually(ready, lambda code: code == 200, timeout=60, what="console ready")
        yield url
    finally:
        service.closing.set()
        server.should_exit = True
        await serving


@asynccontextmanager
async def desk(settings: Settings, *also: str) -> AsyncIterator[Desk]:
    """intake, dispatch and ``also`` running, and the console served. The requests were received
    on a fixed day, so intake reads a clock driven to that day, and so does sla, whose clocks
    would otherwise breach and escalate them at once (the others keep the real one)."""
    timed = ("intake", "sla")
    async with AsyncExitStack() as stack:
        driven = await intake_clock(settings, also=tuple(n for n in also if n in timed))
        for name in ("intake", "dispatch", *also):
            own = driven if name in timed else settings
            await stack.enter_async_context(running(build_service(name, own)))
        console = build_service("console", settings)
        url = await stack.enter_async_context(served(console))
        kafka = KafkaProbe(settings)
        stack.push_async_callback(kafka.close)
        world = Desk(settings, console, kafka, url)
        try:
            yield world
        finally:
            for client in world.clients:
                await client.aclose()


async def sse_events(
    client: httpx.AsyncClient, until: Any, timeout: float = 30.0
) -> list[tuple[str, dict[str, Any], float]]:
    """Read ``/api/stream`` until ``until(events)`` holds: (event, data, arrival time)."""
    events: list[tuple[str, dict[str, Any], float]] = []
    deadline = time.monotonic() + timeout
    async with client.stream("GET", "/api/stream", timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = "message"
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:]), time.time()))
                if until(events):
                    return events
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"the stream did not deliver in {timeout}s: {events[-5:]}")


def port(settings: Settings) -> int:
    return port_of(settings, "console")

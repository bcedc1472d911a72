"""Health of a running system as an operator sees it: infrastructure and each service's /ready."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient

from shared.kafka import client_options
from shared.settings import Settings


@dataclass(frozen=True)
class ComponentStatus:
    component: str
    address: str
    up: bool
    detail: str


async def check_database(settings: Settings, timeout: float = 3.0) -> ComponentStatus:
    url = settings.database_url or ""
    address = url.split("@")[-1] if url else "(not configured)"
    if not url:
        return ComponentStatus("postgres", address, False, "DATABASE_URL unknown")
    try:
        conn = await asyncpg.connect(url, timeout=timeout)
        try:
            version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
    except Exception as error:
        return ComponentStatus("postgres", address, False, _short(error))
    return ComponentStatus("postgres", address, True, f"PostgreSQL {version}")


async def check_broker(settings: Settings, timeout: float = 5.0) -> ComponentStatus:
    address = settings.kafka_bootstrap_servers or "(not configured)"
    if not settings.kafka_bootstrap_servers:
        return ComponentStatus("kafka", address, False, "KAFKA_BOOTSTRAP_SERVERS unknown")
    admin = AIOKafkaAdminClient(
        **client_options(settings), client_id="desk-status", request_timeout_ms=int(timeout * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        topics = await asyncio.wait_for(admin.list_topics(), timeout)
    except Exception as error:
        return ComponentStatus("kafka", address, False, _short(error))
    finally:
        await admin.close()
    return ComponentStatus("kafka", address, True, f"{len(topics)} topics")


async def check_service(
    settings: Settings, name: str, port: int, client: httpx.AsyncClient
) -> ComponentStatus:
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    url = f"http://{host}:{port}/ready"
    try:
        response = await client.get(url)
        body = response.json()
    except Exception as error:
        return ComponentStatus(name, url, False, _short(error))
    checks = body.get("checks", {})
    failing = [k for k, ok in checks.items() if not ok]
    detail = "ready" if response.status_code == 200 else f"not ready: {', '.join(failing)}"
    return ComponentStatus(name, url, response.status_code == 200, detail)


async def check_all(
    settings: Settings, ports: Mapping[str, int], timeout: float = 5.0
) -> list[ComponentStatus]:
    """The database, the broker and each service (name -> its HTTP port)."""
    async with httpx.AsyncClient(timeout=timeout) as client:
        results = await asyncio.gather(
            check_database(settings, timeout),
            check_broker(settings, timeout),
            *(check_service(settings, name, port, client) for name, port in ports.items()),
        )
    return list(results)


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:120]

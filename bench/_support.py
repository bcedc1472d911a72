"""What every benchmark needs: infrastructure, a fresh database, a JSON report."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

from shared.database import create_database, drop_database, with_database
from shared.local.broker import EMBEDDED_BROKER_SETTINGS
from shared.local.infrastructure import start_infrastructure
from shared.logging import configure_logging
from shared.settings import Settings


@asynccontextmanager
async def bench_settings(**overrides: Any) -> AsyncIterator[Settings]:
    """Settings pointing at real infrastructure: ``DATABASE_URL``/``KAFKA_BOOTSTRAP_SERVERS``
    if set, embedded servers otherwise (PostgreSQL with its default durability)."""
    configure_logging("bench", log_format="console", level="WARNING")
    data_dir = Path(tempfile.mkdtemp(prefix="desk-bench-"))
    base = Settings(data_dir=data_dir)
    infra = await start_infrastructure(base)
    name = f"bench_{uuid4().hex[:8]}"
    admin = infra.database_url
    await create_database(admin, name)
    broker = EMBEDDED_BROKER_SETTINGS if infra.embedded_broker else {}
    settings = base.replace(
        database_url=with_database(admin, name),
        kafka_bootstrap_servers=infra.bootstrap_servers,
        topic_prefix=f"b{uuid4().hex[:8]}.",
        **broker,
        **overrides,
    )
    try:
        yield settings
    finally:
        await drop_database(admin, name)
        infra.stop()


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "database": "external" if os.environ.get("DATABASE_URL") else "embedded PostgreSQL 18",
        "broker": "external" if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else "embedded Tansu",
    }


def report(results: dict[str, Any]) -> None:
    """Print the benchmark's result as the last line of output (one JSON object)."""
    sys.stdout.write(json.dumps({**results, "machine": machine()}) + "\n")
    sys.stdout.flush()


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.start

    def rate(self, count: int) -> float:
        return round(count / self.seconds, 1)

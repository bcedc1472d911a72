"""PostgreSQL and Kafka for one machine: external when configured, embedded otherwise.

``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` win when set; otherwise an embedded PostgreSQL keeps
its data under ``<data_dir>/postgres`` (so tickets survive a restart of ``desk up``) and an
embedded broker listens on a free loopback port. :meth:`Infrastructure.environment` is what
every child process needs to find them.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.database import create_database, wait_for_database, with_database
from shared.local.broker import EMBEDDED_BROKER_SETTINGS, EmbeddedBroker, embedded_broker_env
from shared.local.postgres import EmbeddedPostgres
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)


@dataclass
class Infrastructure:
    database_url: str
    bootstrap_servers: str
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def embedded_broker(self) -> bool:
        return self.broker is not None

    def environment(self) -> dict[str, str]:
        """Variables that point a child process at this infrastructure."""
        env = {
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            **self.extra_env,
        }
        if self.broker is not None:
            env.update(embedded_broker_env())
        return env

    def describe(self) -> dict[str, Any]:
        return {
            "database_url": self.database_url,
            "bootstrap_servers": self.bootstrap_servers,
            "postgres_pid": self.postgres.pid if self.postgres else None,
            "broker_pid": self.broker.pid if self.broker else None,
            "embedded_broker": self.embedded_broker,
            "broker_settings": EMBEDDED_BROKER_SETTINGS if self.broker is not None else {},
        }

    def stop(self) -> None:
        """Stop what was started here (external servers are left alone)."""
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()


async def start_infrastructure(settings: Settings, *, durable: bool = True) -> Infrastructure:
    """Use the configured servers, or start embedded ones; wait until both answer."""
    postgres = None
    if settings.database_url:
        database_url = settings.database_url
    else:
        postgres = EmbeddedPostgres(settings.data_dir / "postgres", durable=durable)
        admin_url = await asyncio.to_thread(postgres.start)
        await create_database(admin_url, settings.database_name)
        database_url = with_database(admin_url, settings.database_name)
    await wait_for_database(database_url)

    broker = None
    if settings.kafka_bootstrap_servers:
        bootstrap = settings.kafka_bootstrap_servers
    else:
        broker = EmbeddedBroker(
            log_file=settings.data_dir / "broker.log", pid_file=settings.data_dir / "broker.pid"
        )
        try:
            await asyncio.to_thread(broker.end_leftover)
            broker.launch()  # from the loop's thread: the broker dies with this process
            bootstrap = await asyncio.to_thread(broker.wait_listening)
        except BaseException:
            if postgres is not None:
                postgres.stop()
            raise
    return Infrastructure(database_url, bootstrap, postgres, broker)


# --- the run file: how `desk status` finds a running `desk up` ---------------------------


def run_file(data_dir: Path) -> Path:
    return data_dir / "run.json"


def write_run_file(data_dir: Path, content: dict[str, Any]) -> None:
    path = run_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content, indent=2, default=str))
    os.replace(tmp, path)


def read_run_file(data_dir: Path) -> dict[str, Any] | None:
    try:
        content: dict[str, Any] = json.loads(run_file(data_dir).read_text())
    except (OSError, ValueError):
        return None
    return content

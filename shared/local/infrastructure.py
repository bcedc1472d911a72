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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.database import connect, create_database, wait_for_database, with_database
from shared.local.broker import EmbeddedBroker, embedded_broker_env, embedded_broker_settings
from shared.local.postgres import EmbeddedPostgres
from shared.logging import get_logger
from shared.privileges import OWNER_ROLE, create_roles, hand_over, role_url, service_role
from shared.settings import Settings

log = get_logger(__name__)


@dataclass
class Infrastructure:
    database_url: str
    """The owner role's URL on the embedded server (migrations, operators' tools); the
    configured ``DATABASE_URL`` otherwise."""
    bootstrap_servers: str
    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    service_urls: dict[str, str] = field(default_factory=dict)
    """Each service's own login role on the embedded server (``shared.privileges``)."""
    admin_url: str | None = None
    """The embedded server's superuser (creating databases and roles)."""

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

    def service_environment(self, name: str) -> dict[str, str]:
        """:meth:`environment` for one service's process: its own database role."""
        return {
            **self.environment(),
            "DATABASE_URL": self.service_urls.get(name, self.database_url),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "database_url": self.database_url,
            "bootstrap_servers": self.bootstrap_servers,
            "postgres_pid": self.postgres.pid if self.postgres else None,
            "broker_pid": self.broker.pid if self.broker else None,
            "embedded_broker": self.embedded_broker,
            "broker_settings": embedded_broker_settings() if self.broker is not None else {},
        }

    def stop(self) -> None:
        """Stop what was started here (external servers are left alone)."""
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()


async def start_infrastructure(
    settings: Settings, *, services: Sequence[str] = (), durable: bool = True
) -> Infrastructure:
    """Use the configured servers, or start embedded ones; wait until both answer.

    On the embedded server the database belongs to the owner role and each of ``services`` gets
    its own login role, as in production (``shared.privileges``); a configured ``DATABASE_URL``
    is used as it is, by migrations and services alike.
    """
    postgres, admin_url, service_urls = None, None, {}
    if settings.database_url:
        database_url = settings.database_url
    else:
        postgres = EmbeddedPostgres(settings.data_dir / "postgres", durable=durable)
        admin_url = await asyncio.to_thread(postgres.start)
        name = settings.database_name
        admin_db = with_database(admin_url, name)
        try:
            await create_database(admin_url, name)
            conn = await connect(admin_db)
            try:
                await create_roles(conn, services)
                await hand_over(conn, name, services)
            finally:
                await conn.close()
        except BaseException:
            postgres.stop()
            raise
        database_url = role_url(admin_db, OWNER_ROLE)
        service_urls = {s: role_url(admin_db, service_role(s)) for s in services}
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
    return Infrastructure(
        database_url, bootstrap, postgres, broker, service_urls=service_urls, admin_url=admin_url
    )


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

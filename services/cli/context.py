"""What every ``desk`` command needs: settings that also know about a running ``desk up``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from services import desk_settings, desk_settings_class, port_field, service_names
from shared.database import connect
from shared.local.infrastructure import read_run_file
from shared.settings import Settings

console = Console(highlight=False, soft_wrap=True)
T = TypeVar("T")

MAX_DAYS = 36_600
"""The longest look back a ``--days`` option takes (a century): more is no date a report can
start from."""


def plain_row(table: Table, *cells: str | Text) -> None:
    """A table row of data, shown as it is: never read as rich markup, for customers write
    some of it (a name of ``[/]`` broke ``desk ticket show``; ``[link=…]`` made a live link).
    A cell to be styled is given as a :class:`~rich.text.Text` already."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))


def load_settings() -> Settings:
    """Every service's settings from the environment; where the infrastructure and the keys
    are unset, those of the running `desk up`, and the ports it gave the services."""
    settings = desk_settings()
    running = read_run_file(settings.data_dir)
    if not running:
        return settings
    update: dict[str, Any] = {}
    if not settings.database_url:
        update["database_url"] = running.get("database_url")
    if not settings.kafka_bootstrap_servers:
        update["kafka_bootstrap_servers"] = running.get("bootstrap_servers")
        update.update(running.get("broker_settings", {}))
    if settings.keys_file is None and settings.keys is None and running.get("keys_file"):
        update["keys_file"] = running["keys_file"]
    local_master = settings.data_dir / "master.key"
    if settings.master_key_file is None and settings.master_key is None and local_master.exists():
        update["master_key_file"] = local_master
    fields = desk_settings_class().model_fields
    for name, port in running.get("ports", {}).items():
        if port_field(name) in fields:
            update[port_field(name)] = port
    return settings.replace(**update)


def database_settings() -> Settings:
    """:func:`load_settings` for commands that read the database: fail clearly without one."""
    settings = load_settings()
    if not settings.database_url:
        raise fail("DATABASE_URL is not set and no `desk up` is running")
    return settings


@asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """One connection to the system's database for a command, closed after it."""
    conn = await connect(settings.require_database_url())
    try:
        yield conn
    finally:
        await conn.close()


def pick_services(names: list[str] | None) -> list[str]:
    """The services named (all by default), in the order of :data:`services.SERVICES`."""
    known = service_names()
    if not names:
        return list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise typer.BadParameter(f"unknown service {', '.join(unknown)}; known: {known}")
    return [n for n in known if n in names]


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)

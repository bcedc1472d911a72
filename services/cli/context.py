"""What every ``desk`` command needs: settings that also know about a running ``desk up``."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console

from services import SERVICE_NAMES, ServiceName
from shared.local.infrastructure import read_run_file
from shared.settings import Settings

console = Console(highlight=False, soft_wrap=True)
T = TypeVar("T")


def load_settings() -> Settings:
    """Environment settings; where the infrastructure is unset, the one `desk up` started."""
    settings = Settings()
    running = read_run_file(settings.data_dir)
    if not running:
        return settings
    update: dict[str, Any] = {}
    if not settings.database_url:
        update["database_url"] = running.get("database_url")
    if not settings.kafka_bootstrap_servers:
        update["kafka_bootstrap_servers"] = running.get("bootstrap_servers")
        update.update(running.get("broker_settings", {}))
    for name, port in running.get("ports", {}).items():
        update[f"{name}_port"] = port
    return settings.replace(**update)


def pick_services(names: list[str] | None) -> list[ServiceName]:
    if not names:
        return list(SERVICE_NAMES)
    unknown = [n for n in names if n not in SERVICE_NAMES]
    if unknown:
        raise typer.BadParameter(f"unknown service {', '.join(unknown)}; known: {SERVICE_NAMES}")
    return [n for n in SERVICE_NAMES if n in names]


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)

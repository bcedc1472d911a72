"""``desk demo``: publish demo requests (:mod:`services.intake.demo`) like a channel adapter."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.cli.context import console, fail, load_settings
from services.intake.demo import run_demo


def demo(
    rate: Annotated[float, typer.Option(help="Requests per second.")] = 5.0,
    count: Annotated[int, typer.Option(help="How many to send (0: until Ctrl-C).")] = 100,
    seed: Annotated[int | None, typer.Option(help="Random seed, for a repeatable mix.")] = None,
) -> None:
    """Publish a realistic mix of requests to requests.incoming, like a channel adapter."""
    settings = load_settings()
    if not settings.kafka_bootstrap_servers:
        raise fail("KAFKA_BOOTSTRAP_SERVERS is not set and no `desk up` is running")

    async def go() -> int:
        stop = asyncio.Event()
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("publishing requests", total=count or None)

            def sent(total: int) -> None:
                progress.update(task, completed=total)

            try:
                return await run_demo(
                    settings, rate=rate, stop=stop, count=count, seed=seed, on_sent=sent
                )
            except asyncio.CancelledError:
                stop.set()
                raise

    try:
        sent = asyncio.run(go())
    except KeyboardInterrupt:
        console.print("stopped")
        return
    console.print(f"published {sent} requests")

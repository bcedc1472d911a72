"""``desk demo``: publish demo requests (:mod:`services.intake.demo`) like a channel adapter, and
let demo agents and customers work the tickets with signed commands (:mod:`services.dispatch.demo`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.cli.context import console, fail, load_settings
from services.dispatch.demo import run_desk_work
from services.intake.demo import run_demo


def demo(
    rate: Annotated[float, typer.Option(help="Requests per second.")] = 5.0,
    count: Annotated[int, typer.Option(help="How many to send (0: until Ctrl-C).")] = 100,
    seed: Annotated[int | None, typer.Option(help="Random seed, for a repeatable mix.")] = None,
    work: Annotated[
        bool, typer.Option(help="Agents take the tickets through; customers rate them.")
    ] = True,
    pace: Annotated[
        float,
        typer.Option(
            help="Scales how long agents and customers take for each step (1: a person's "
            "pace; 0.2, the default: five times faster; larger is slower)."
        ),
    ] = 0.2,
) -> None:
    """Publish a realistic mix of requests to requests.incoming, like a channel adapter; demo
    agents and customers work the tickets, signing their commands with the local keys."""
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

            finished = asyncio.Event()
            working = (
                asyncio.create_task(run_desk_work(settings, stop=finished, seed=seed, pace=pace))
                if work
                else None
            )
            try:
                published = await run_demo(
                    settings, rate=rate, stop=stop, count=count, seed=seed, on_sent=sent
                )
                if working is not None:
                    progress.update(task, description="agents at work (a few seconds)")
                    await asyncio.sleep(5)  # the last requests reach an agent
                    finished.set()
                    console.print(f"agents took {await working} tickets through")
                return published
            except asyncio.CancelledError:
                stop.set()
                finished.set()
                raise
            finally:
                if working is not None and not working.done():
                    working.cancel()

    try:
        sent = asyncio.run(go())
    except KeyboardInterrupt:
        console.print("stopped")
        return
    console.print(f"published {sent} requests")

"""Dead letters: ``desk dlq list`` and ``desk dlq replay``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from services.cli.context import console, fail, load_settings, pick_services, run_async
from shared.database import connect
from shared.deadletter import DeadLetter, list_dead_letters, replay_dead_letter
from shared.kafka import make_producer
from shared.settings import Settings

app = typer.Typer(help="Messages consumers gave up on, with their reasons.", no_args_is_help=True)

ServiceOption = Annotated[
    list[str] | None, typer.Option("--service", "-s", help="Only this service (repeatable).")
]


async def _letters(settings: Settings, names: list[str], everything: bool) -> list[DeadLetter]:
    conn = await connect(settings.require_database_url())
    try:
        letters: list[DeadLetter] = []
        for name in names:
            letters.extend(await list_dead_letters(conn, name, include_replayed=everything))
        return letters
    finally:
        await conn.close()


@app.command("list")
def list_(
    service: ServiceOption = None,
    all_: Annotated[bool, typer.Option("--all", help="Include replayed ones.")] = False,
) -> None:
    """Dead letters of every service, oldest first."""
    settings = load_settings()
    if not settings.database_url:
        raise fail("DATABASE_URL is not set and no `desk up` is running")
    letters = run_async(_letters(settings, pick_services(service), all_))
    table = Table(show_header=True)
    for column in (
        "service",
        "id",
        "consumer",
        "from",
        "reason",
        "attempts",
        "error",
        "recorded",
        "replayed",
    ):
        table.add_column(column)
    for d in letters:
        table.add_row(
            d.service,
            str(d.id),
            d.consumer,
            f"{d.topic}/{d.partition}/{d.offset}",
            d.reason,
            str(d.attempts),
            d.error[:80],
            d.recorded_at.strftime("%Y-%m-%d %H:%M:%S"),
            d.replayed_at.strftime("%Y-%m-%d %H:%M:%S") if d.replayed_at else "",
        )
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)")


@app.command()
def replay(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Dead-letter ids (see `desk dlq list`).")
    ] = None,
    service: ServiceOption = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every pending dead letter.")] = False,
) -> None:
    """Send dead letters back to their original topic (after the cause was fixed)."""
    settings = load_settings()
    if not settings.database_url or not settings.kafka_bootstrap_servers:
        raise fail("DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS unknown and no `desk up` is running")
    if not ids and not all_:
        raise fail("name dead-letter ids, or pass --all")

    async def go() -> int:
        letters = await _letters(settings, pick_services(service), everything=False)
        chosen = [d for d in letters if all_ or d.id in (ids or [])]
        producer = make_producer(settings, client_id="desk-dlq-replay")
        await producer.start()
        conn = await connect(settings.require_database_url())
        try:
            for letter in chosen:
                await replay_dead_letter(conn, producer, letter)
                console.print(f"replayed {letter.service}/{letter.id} to {letter.topic}")
        finally:
            await conn.close()
            await producer.stop()
        return len(chosen)

    count = run_async(go())
    console.print(f"{count} dead letter(s) replayed")

"""Dead letters: ``desk dlq list`` and ``desk dlq replay``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from services import service_names
from services.cli.context import console, fail, load_settings, pick_services, plain_row, run_async
from shared.database import connect
from shared.deadletter import (
    DeadLetter,
    ErasedDeadLetter,
    list_dead_letters,
    replay_dead_letter,
)
from shared.kafka import make_producer
from shared.keystore import KeyStore, MasterKeyError
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
    """Dead letters of every service, oldest first, each named ``<service>/<id>``."""
    settings = load_settings()
    if not settings.database_url:
        raise fail("DATABASE_URL is not set and no `desk up` is running")
    letters = run_async(_letters(settings, pick_services(service), all_))
    table = Table(show_header=True)
    names = [letter_name(d) for d in letters]
    table.add_column("id", no_wrap=True, min_width=max(map(len, names), default=2))
    for column in ("consumer", "from", "reason", "attempts", "error", "recorded", "replayed"):
        table.add_column(column)
    for d, name in zip(letters, names, strict=True):
        plain_row(
            table,
            name,
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


def letter_name(letter: DeadLetter) -> str:
    """How operators name a dead letter: every service numbers its own, so the id alone is
    ambiguous."""
    return f"{letter.service}/{letter.id}"


def _chosen(
    names: list[str], services: list[str] | None, pending: list[DeadLetter]
) -> list[DeadLetter]:
    """The pending dead letters ``names`` mean (``<service>/<id>``, or a bare id when exactly
    one ``--service`` is given); refuse — replaying nothing — if any is ambiguous or unknown."""
    by_name = {letter_name(d): d for d in pending}
    chosen: list[DeadLetter] = []
    problems: list[str] = []
    for name in names:
        service, _, number = name.rpartition("/")
        if not service:
            if services is None or len(services) != 1:
                could_be = [n for n in by_name if n.endswith(f"/{name}")]
                problems.append(
                    f"{name} is ambiguous: every service numbers its dead letters; name it as "
                    f"<service>/<id> ({', '.join(could_be) or 'none is pending'})"
                )
                continue
            service = services[0]
        if service not in service_names():
            problems.append(f"{name}: unknown service {service!r}")
        elif not number.isdigit() or f"{service}/{int(number)}" not in by_name:
            problems.append(f"{service}/{number} is not a pending dead letter (`desk dlq list`)")
        else:
            chosen.append(by_name[f"{service}/{int(number)}"])
    if problems:
        raise fail("nothing replayed:\n  " + "\n  ".join(problems))
    return chosen


@app.command()
def replay(
    ids: Annotated[
        list[str] | None,
        typer.Argument(help="Dead letters as <service>/<id> (see `desk dlq list`).", metavar="ID"),
    ] = None,
    service: ServiceOption = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every pending dead letter.")] = False,
) -> None:
    """Send dead letters back to their original topic (after the cause was fixed).

    Name each as ``<service>/<id>``; a bare id only with a single ``--service``."""
    settings = load_settings()
    if not settings.database_url or not settings.kafka_bootstrap_servers:
        raise fail("DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS unknown and no `desk up` is running")
    if not ids and not all_:
        raise fail("name dead letters (<service>/<id>), or pass --all")
    if ids and all_:
        raise fail("name dead letters or pass --all, not both")
    pending = run_async(_letters(settings, pick_services(service), everything=False))
    chosen = pending if all_ else _chosen(ids or [], service, pending)

    keys = KeyStore(settings)  # a request or an agent's reply is replayed from its sealed copy

    async def go() -> int:
        producer = make_producer(settings, client_id="desk-dlq-replay")
        await producer.start()
        conn = await connect(settings.require_database_url())
        try:
            replayed = 0
            for letter in chosen:
                try:
                    await replay_dead_letter(conn, producer, letter, keys)
                except (ErasedDeadLetter, MasterKeyError) as unopened:
                    console.print(f"not replayed: {letter_name(letter)}: {unopened}", markup=False)
                    continue
                replayed += 1
                console.print(f"replayed {letter_name(letter)} to {letter.topic}")
        finally:
            await conn.close()
            await producer.stop()
        return replayed

    count = run_async(go())
    console.print(f"{count} dead letter(s) replayed")

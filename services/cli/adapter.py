"""``desk adapter``: channel adapters run as their own process (:mod:`services.intake.mail`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer

from services.cli.context import console, fail, load_settings
from services.intake.mail.adapter import serve_mail

app = typer.Typer(help="Channel adapters: publish what customers send to requests.incoming.")


@app.command()
def email(
    host: Annotated[str | None, typer.Option(help="Interface (DESK_EMAIL_ADAPTER_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="SMTP port (DESK_EMAIL_ADAPTER_PORT).")] = None,
) -> None:
    """Receive mail over SMTP and publish each as a request (a reply when it answers a ticket);
    automatic mail (auto-replies, bounces, lists) is recorded and dropped. Ctrl-C stops it."""
    settings = load_settings()
    if not settings.kafka_bootstrap_servers:
        raise fail("KAFKA_BOOTSTRAP_SERVERS is not set and no `desk up` is running")
    changes = {"email_adapter_host": host, "email_adapter_port": port}
    settings = settings.replace(**{k: v for k, v in changes.items() if v is not None})

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def listening(bound_host: str, bound_port: int) -> None:
            console.print(f"email adapter: SMTP on {bound_host}:{bound_port}")

        await serve_mail(settings, stop, ready=listening)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())

"""The email channel in a test: the adapter listening in the test's loop, a real SMTP client
(smtplib, in a thread) sending to it, and the services that answer by mail."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from email.utils import make_msgid

from services.intake.mail.adapter import serve_mail
from shared.local.ports import free_port
from shared.settings import Settings

CUSTOMER = "wang.fang@example.com"


@asynccontextmanager
async def email_adapter(settings: Settings) -> AsyncIterator[int]:
    """``desk adapter email`` on a free port; yields the port."""
    port = free_port()
    stop = asyncio.Event()
    listening = asyncio.Event()
    task = asyncio.create_task(
        serve_mail(
            settings.replace(email_adapter_port=port),
            stop,
            ready=lambda host, bound: listening.set(),
        )
    )
    done, _ = await asyncio.wait(
        [task, asyncio.ensure_future(listening.wait())],
        timeout=30,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if task in done:
        task.result()  # it failed: raise why
    try:
        yield port
    finally:
        stop.set()
        await task


def customer_mail(
    body: str,
    *,
    subject: str,
    replying_to: EmailMessage | None = None,
    sender: str = f"Wang Fang <{CUSTOMER}>",
    **headers: str,
) -> EmailMessage:
    """A mail as a customer's client writes it; a reply carries In-Reply-To and References."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "desk@desk.example.com"
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="mail.example.com")
    if replying_to is not None:
        previous = str(replying_to["Message-ID"])
        chain = str(replying_to.get("References", "")).split()
        message["In-Reply-To"] = previous
        message["References"] = " ".join([*chain, previous])
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


async def send(port: int, message: EmailMessage, *, envelope_sender: str = CUSTOMER) -> None:
    """Deliver over SMTP, as the customer's mail server would."""

    def deliver() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.send_message(
                message, from_addr=envelope_sender, to_addrs=["desk@desk.example.com"]
            )

    await asyncio.to_thread(deliver)

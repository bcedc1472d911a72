"""``desk adapter email``: an SMTP receiver publishing each mail as a request.

It speaks SMTP to the mail server in front of it (which checks SPF/DKIM/DMARC: the sender of a
mail is as trustworthy as that server's verdict) and answers each mail only once its request is
on ``requests.incoming`` — acknowledged by the broker, with the producer settings of every
other client — so a mail the adapter accepted is never lost; if the broker does not take it the
answer is 451 and the sending server tries again (the Message-ID makes the repeat one request).
Automatic mail (:mod:`.rules`) is accepted and dropped — answering it with a bounce would be the
loop — and recorded in the log and ``desk_adapter_email_mail_total{outcome, reason}``. A mail
that makes no valid request is refused with 550 and the reason code intake would give.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiosmtpd.smtp import SMTP
from prometheus_client import Counter

from services.intake.contract import INCOMING_TOPIC, Refusal, read_request
from services.intake.mail.reading import REFUSED, Unread, read_mail
from services.intake.settings import IntakeSettings
from shared.kafka import ensure_topics, make_producer
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)
MAIL = Counter(
    "desk_adapter_email_mail_total",
    "Mail the email adapter received, by outcome (request, reply, ignored, refused, retry) and "
    "reason code.",
    ["outcome", "reason"],
)


class MailIntake:
    """The SMTP handler: one mail in, one request published (or a reason it is not one)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.clock = clock

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or b""
        # Off the event loop: a large mail takes a while to read (MAX_PARTS bounds how long),
        # and meanwhile every other sender's session goes on.
        read = await asyncio.to_thread(
            read_mail, raw, envelope_sender=envelope.mail_from, received_at=self.clock()
        )
        if isinstance(read, Unread):
            return self._unread(read, envelope.mail_from)
        value = json.dumps(read, ensure_ascii=False).encode()
        checked = read_request(value)
        if isinstance(checked, Refusal):
            MAIL.labels("refused", checked.reason).inc()
            log.warning(
                "mail refused",
                reason=checked.reason,
                field=checked.field,
                detail=checked.message[:200],
                message_id=read["channel_message_id"],
            )
            return f"550 5.6.0 {checked.reason}: {checked.message[:200]}"
        key = checked.thread_key.encode()
        try:
            await self.producer.send_and_wait(self.topic, value=value, key=key)
        except KafkaError as error:
            MAIL.labels("retry", "broker_unavailable").inc()
            log.warning("mail not published, the sender will retry", error=str(error)[:200])
            return "451 4.3.0 try again later"
        threaded = checked.reply_to_ticket or checked.in_reply_to
        MAIL.labels("reply" if threaded else "request", "").inc()
        log.info(
            "mail published",
            message_id=checked.channel_message_id,
            reply_to_ticket=checked.reply_to_ticket,
            attachments=len(checked.attachments),
        )
        return "250 2.0.0 OK"

    def _unread(self, unread: Unread, sender: str | None) -> str:
        if unread.reason in REFUSED:
            MAIL.labels("refused", unread.reason).inc()
            log.warning("mail refused", reason=unread.reason, detail=unread.detail)
            return f"550 5.6.0 {unread.reason}: {unread.detail[:200]}"
        MAIL.labels("ignored", unread.reason).inc()
        log.info(
            "automatic mail ignored",
            reason=unread.reason,
            message_id=unread.message_id,
            sender=sender,
        )
        return "250 2.0.0 OK (automatic message: recorded, not a request)"


async def serve_mail(
    settings: Settings,
    stop: asyncio.Event,
    *,
    ready: Callable[[str, int], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Receive mail until ``stop``; ``ready`` is told the host and port once it listens."""
    own = IntakeSettings.of(settings)
    topic = own.topic(INCOMING_TOPIC)
    await ensure_topics(own, [topic])
    producer = make_producer(own, client_id="desk-adapter-email")
    await producer.start()
    try:
        handler = MailIntake(producer, topic, clock)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(
                handler,
                data_size_limit=own.email_adapter_max_bytes,
                enable_SMTPUTF8=True,
                hostname="servicedesk",
                loop=loop,
            ),
            own.email_adapter_host,
            own.email_adapter_port,
        )
        port = server.sockets[0].getsockname()[1]
        log.info("email adapter listening", host=own.email_adapter_host, port=port)
        if ready is not None:
            ready(own.email_adapter_host, port)
        try:
            await stop.wait()
        finally:
            server.close()
            await server.wait_closed()
    finally:
        await producer.stop()

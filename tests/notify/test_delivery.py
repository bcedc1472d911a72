"""The delivery worker on a graceful stop: notices already on the wire are answered and recorded
before it ends, so none waits for its lease to be sent a second time."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from services.notify.app import build as notify
from shared.database import connect
from shared.local.ports import free_port
from shared.settings import Settings
from tests.notify.test_notify import send_ticket
from tests.support.kafka import KafkaProbe
from tests.support.services import start


class SlowMailServer:
    """Accepts every message, answering only after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrived = threading.Event()
        self.accepted = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrived.set()
        await asyncio.sleep(self.delay)
        self.accepted += 1
        return "250 OK"


@pytest.mark.asyncio
async def test_a_graceful_stop_records_the_notices_it_was_sending(
    settings: Settings, kafka: KafkaProbe
) -> None:
    mail = SlowMailServer(delay=1.5)
    port = free_port()
    controller = Controller(mail, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        service = await start(notify(settings.replace(smtp_host="127.0.0.1", smtp_port=port)))
        try:
            await send_ticket(kafka, 1)  # its acknowledgement goes by email
            assert await asyncio.to_thread(mail.arrived.wait, 30), "the notice was never sent"
        finally:
            await service.app.stop()  # SIGTERM's path, while the mail server has not answered
        conn = await connect(settings.require_database_url())
        try:
            statuses = await conn.fetch("SELECT status, attempts FROM notify.deliveries")
        finally:
            await conn.close()
    finally:
        controller.stop()
    assert [(r["status"], r["attempts"]) for r in statuses] == [("sent", 1)]
    assert mail.accepted == 1

"""The delivery worker: a notice goes as soon as its transaction commits; on a graceful stop,
notices already on the wire are answered and recorded before it ends, so none waits for its
lease to be sent a second time; a receiver that hangs, or is slow, holds back no other notice
and gets none twice."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Sized
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from services.notify.app import build as notify
from services.notify.delivery import in_hand_per_destination, latest_start, sender_hands
from services.notify.settings import NotifySettings
from shared.database import connect
from shared.local.ports import free_port
from shared.local.sinks import SmtpServer, http_receiver, smtp_server
from shared.settings import Settings
from tests.notify.test_notify import EVENTS, data, kind, notify_settings, send_ticket
from tests.support.kafka import KafkaProbe
from tests.support.services import running, start
from tests.support.waiting import eventually


class SlowMailServer:
    """Accepts every message, answering only after ``delay`` seconds; keeps the recipients of
    each message it accepted."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrived = threading.Event()
        self.accepted = 0
        self.recipients: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrived.set()
        await asyncio.sleep(self.delay)
        self.accepted += 1
        self.recipients.extend(envelope.rcpt_tos)
        return "250 OK"


@pytest.mark.asyncio
async def test_a_notice_goes_when_its_transaction_commits_not_at_the_next_poll(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """The consumer wakes the worker on commit: with the worker polling every ten minutes,
    each acknowledgement still goes within seconds. The second ticket comes while the worker
    sleeps, having found nothing more after the first."""
    with smtp_server() as smtp, http_receiver() as http:
        desk = notify_settings(settings, tmp_path, smtp, http, notify_interval="10m")
        async with running(notify(desk)):
            for n in (1, 2):
                await send_ticket(kafka, n)
                address = f"c{n}@example.com"
                await eventually(
                    functools.partial(_count, functools.partial(smtp.to, address)),
                    timeout=20,
                    what=f"the acknowledgement to {address}",
                )


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


async def _count(values: Callable[[], Sized]) -> int:
    return len(values())


@pytest.mark.asyncio
async def test_a_hanging_webhook_holds_back_no_other_notice(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """li.na's receiver answers nothing within the send timeout, and forty notices are owed
    to it — more than notify's 32 send slots. Acknowledgements sent meanwhile go out at once:
    rounds used to wait for their slowest send, and then the hanging sends filled every slot;
    now one destination has at most DESK_NOTIFY_DESTINATION_CONCURRENCY sends on the wire."""
    with smtp_server() as smtp, http_receiver() as http:
        http.slow["/agents/li.na"] = 300
        desk = notify_settings(  # no send times out while the test runs: 12 stay on the wire
            settings,
            tmp_path,
            smtp,
            http,
            notify_send_timeout="120s",
            notify_lease="150s",
            notify_destination_concurrency=12,
        )
        async with running(notify(desk)):
            for n in range(1, 41):
                await send_ticket(kafka, n, agent="li.na")
            await eventually(lambda: _count(lambda: smtp.messages), lambda c: c == 40, timeout=60)
            await eventually(lambda: _count(lambda: http.at("/agents/li.na")), lambda c: c == 12)
            began = time.monotonic()
            for n in range(100, 105):
                await send_ticket(kafka, n)
            await eventually(lambda: _count(lambda: smtp.messages), lambda c: c == 45, timeout=60)
            waited = time.monotonic() - began
            on_the_wire = len(http.at("/agents/li.na"))
            http.release()
    assert waited < 30, f"acknowledgements waited {waited:.1f} s behind the hanging webhook"
    assert on_the_wire == 12  # the rest wait their turn, none past its destination's share


@pytest.mark.asyncio
async def test_sends_waiting_for_a_connection_neither_time_out_nor_go_twice(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """Twenty webhooks to a receiver answering in 1.5 s, within a 4 s timeout: each is sent
    once, at the first attempt (with 8 connections, the third eight timed out in the queue
    and were sent again). The sender holds the twelve it can send within the 6 s lease, and
    the other eight wait in the table (held too, waiting 1.5 s of the 2 s a turn may take, a
    slowed machine left some to their lease: sent once, but at a second attempt)."""
    attempts = await webhooks_to_a_slow_receiver(
        settings, kafka, tmp_path, 20, answering_in=1.5, notify_send_timeout="4s",
        notify_lease="6s",
    )  # fmt: skip
    assert attempts == [1] * 20


@pytest.mark.asyncio
async def test_a_notice_that_waited_too_long_for_its_turn_is_left_to_its_lease_not_sent_twice(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """Three webhooks to one receiver that answers in 3 s, one at a time on the wire (the
    sender's one slot; its hands hold what the destination's share of three can send within the
    lease), a 4 s timeout and a 5 s lease. The second waits 3 s for its turn: sent then, it
    would still be on the wire when its lease ends at 5 s and be claimed and sent again. Past
    lease - timeout (1 s) of waiting it is left to its lease instead, and goes once, at a later
    attempt."""
    attempts = await webhooks_to_a_slow_receiver(
        settings, kafka, tmp_path, 3, answering_in=3, notify_send_timeout="4s",
        notify_lease="5s", notify_concurrency=1, notify_destination_concurrency=3,
    )  # fmt: skip
    assert attempts[0] == 1
    assert attempts[-1] > 1  # the others waited out their lease


@pytest.mark.asyncio
async def test_a_slow_receiver_s_notices_wait_in_the_table_not_past_their_lease(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """Six webhooks to a receiver answering in 3 s, two on the wire at once, a 4 s timeout and
    a 6 s lease: a notice may wait 2 s for its turn. Held all at once, the third and fourth
    would wait 3 s and be left to their lease (sent at a second attempt, their claim counted
    for a send never made); the sender holds only what it can send within the lease, two, and
    claims the rest as room frees: each goes once, at its first attempt."""
    attempts = await webhooks_to_a_slow_receiver(
        settings, kafka, tmp_path, 6, answering_in=3, notify_send_timeout="4s",
        notify_lease="6s", notify_destination_concurrency=2,
    )  # fmt: skip
    assert attempts == [1] * 6


@pytest.mark.asyncio
async def test_emails_behind_a_slow_relay_with_one_connection_go_once_each(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """Four acknowledgements through one SMTP connection to a relay answering in 2.5 s, a 4 s
    timeout, a 6 s lease, and a destination share of three. Let through the gate three at a
    time, the third waited 5 s for the connection — past the check that it could still be sent
    within its lease — was still being sent when the lease ended, and went twice. The relay's
    share is now no wider than its connections: one at a time, each once, at its first
    attempt."""
    mail = SlowMailServer(delay=2.5)
    port = free_port()
    controller = Controller(mail, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with http_receiver() as http:
            desk = notify_settings(
                settings, tmp_path, SmtpServer(port=port), http, smtp_connections=1,
                notify_destination_concurrency=3, notify_send_timeout="4s", notify_lease="6s",
            )  # fmt: skip
            async with running(notify(desk)):
                for n in range(1, 5):
                    await send_ticket(kafka, n)
                sent = await kafka.await_records(
                    EVENTS,
                    lambda r: kind("sent")(r) and data(r)["channel"] == "email",
                    count=4,
                    timeout=90,
                )
                await kafka.all_records(EVENTS, settle=7.0)  # a second copy would be due by then
    finally:
        controller.stop()
    assert sorted(Counter(mail.recipients).values()) == [1, 1, 1, 1], mail.recipients
    assert sorted(data(r)["attempts"] for r in sent) == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("share", "timeout", "lease", "batch", "held"),
    [
        (12, "10s", "60s", 200, 60),  # the defaults: five waves, the last 10 s to spare
        (12, "10s", "60m", 200, 100),  # never more than half the sender's hands
        (2, "4s", "6s", 200, 2),  # no whole send fits in the 2 s to wait: one wave
        (3, "1s", "3500ms", 200, 6),  # 2.5 s to wait: two waves, the last 1.5 s to spare
        (1, "4s", "5s", 1, 1),  # at least one
    ],
)
def test_a_sender_holds_for_one_destination_what_it_can_send_within_the_lease(
    settings: Settings, share: int, timeout: str, lease: str, batch: int, held: int
) -> None:
    own = NotifySettings.of(
        settings.replace(
            notify_destination_concurrency=share,
            notify_send_timeout=timeout,
            notify_lease=lease,
            notify_batch=batch,
        )
    )
    assert in_hand_per_destination(own) == held
    last_wave = (held // share - 1) * own.notify_send_timeout if held >= share else timedelta()
    assert last_wave <= latest_start(own)  # every wave held is let go in time
    # ... and a send let go at the last moment, answered at the timeout, is recorded in its lease
    assert latest_start(own) + own.notify_send_timeout < own.notify_lease


def test_a_notice_is_let_go_no_later_than_leaves_its_answer_time_to_be_recorded(
    settings: Settings,
) -> None:
    """With the defaults (a 1 min lease, 10 s timeout) a notice waiting for a slot goes within
    49 s of its claim: the last second of the lease is for recording the answer. With a lease
    barely longer than the timeout, a quarter of what is left."""
    defaults = NotifySettings.of(settings)
    assert latest_start(defaults) == timedelta(seconds=49)
    tight = NotifySettings.of(settings.replace(notify_lease="5s", notify_send_timeout="4s"))
    assert latest_start(tight) == timedelta(milliseconds=750)


async def webhooks_to_a_slow_receiver(
    settings: Settings,
    kafka: KafkaProbe,
    tmp_path: Path,
    tickets: int,
    *,
    answering_in: float,
    **options: Any,
) -> list[int]:
    """``tickets`` assignment webhooks to one receiver answering in ``answering_in`` s, through
    notify with ``options``: each must arrive exactly once (by idempotency key); the attempt
    each was sent at, in order."""
    with smtp_server() as smtp, http_receiver() as http:
        http.slow["/agents/wang.qiang"] = answering_in
        desk = notify_settings(settings, tmp_path, smtp, http, **options)
        async with running(notify(desk)):
            for n in range(1, tickets + 1):
                await send_ticket(kafka, n, agent="wang.qiang")
            sent = await kafka.await_records(
                EVENTS,
                lambda r: kind("sent")(r) and data(r)["channel"] == "webhook",
                count=tickets,
                timeout=90,
            )
            await kafka.all_records(EVENTS, settle=4.0)
    keys = Counter(r.headers["idempotency-key"] for r in http.at("/agents/wang.qiang"))
    assert len(keys) == tickets and set(keys.values()) == {1}, keys
    return sorted(data(r)["attempts"] for r in sent)


def test_the_smtp_relay_s_share_is_no_wider_than_its_connections(settings: Settings) -> None:
    """Defaults: a share of 12 sends and 60 held a destination; the relay's follows its 4
    connections, and a claim respects it before any email is in hand."""
    hands = sender_hands(NotifySettings.of(settings.replace(smtp_connections=4)))
    assert hands.share("email") == (4, 20)
    assert hands.share("hooks.example.com") == (12, 60)
    assert hands.rooms == {"email": 20}
    hands.take("email")
    assert hands.rooms == {"email": 19}

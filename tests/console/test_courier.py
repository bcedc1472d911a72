"""The courier's sending slots, against a broker that stops answering (SIGSTOP): a send holds
a connection until the broker answers, so without a bound a few sends froze the console."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid

import httpx
import pytest

from shared.local.broker import EmbeddedBroker
from tests.conftest import SettingsFactory
from tests.console.support import SIMPLE, desk
from tests.console.test_inbox import web_request
from tests.support.credentials import token
from tests.support.waiting import eventually


@pytest.mark.asyncio
async def test_sends_to_a_stalled_broker_hold_half_the_pool_and_the_console_still_answers(
    make_settings: SettingsFactory,
) -> None:
    """Each command in flight to a stalled broker held one of the console's connections (and a
    transaction) for up to the producer's request timeout: with as many in flight as the pool
    has, every read and /ready waited with them. Now half the pool may send; one more send
    waits ``console_send_wait``, holding nothing, then gets 503 with Retry-After; reads are
    answered, and the sends in flight go out once the broker is back."""
    broker = EmbeddedBroker()
    settings = make_settings(
        kafka_bootstrap_servers=broker.start(),
        kafka_request_timeout_ms=20_000,
        db_pool_max_size=4,
        console_send_wait="300ms",
    )
    try:
        async with desk(settings) as world:
            await world.request(0, **SIMPLE)
            [ticket] = await world.tickets("zhao.lei", 1)  # once in the front line's part
            path = f"/api/tickets/{ticket['number']}/commands"
            supervisor = world.client("zhao.lei")
            quick = httpx.AsyncClient(base_url=world.url, timeout=5)
            world.clients.append(quick)
            me = {"Authorization": supervisor.headers["authorization"]}
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                in_flight = [
                    asyncio.create_task(
                        supervisor.post(path, json={"type": "add_note", "note": f"note {n}"})
                    )
                    for n in range(2)
                ]
                # Both recorded, their transactions open while the broker does not answer.
                await eventually(
                    lambda: world.console.pool.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND state = 'idle in transaction' "
                        "AND query LIKE 'INSERT INTO commands %'"
                    ),
                    lambda waiting: waiting == 2,
                    what="two sends waiting on the broker",
                )
                assert not any(task.done() for task in in_flight), [
                    (t.result().status_code, t.result().text) for t in in_flight if t.done()
                ]
                one_more = await quick.post(
                    path, json={"type": "add_note", "note": "one more"}, headers=me
                )
                channel = f"Bearer {token(settings, 'channel:webform')}"
                request = await quick.post(
                    "/requests",
                    content=json.dumps(web_request()).encode(),
                    headers={
                        "Authorization": channel,
                        "Content-Type": "application/json",
                        "Idempotency-Key": str(uuid.uuid4()),
                    },
                )
                read = await quick.get("/api/me", headers=me)
                ready = await quick.get("/ready")
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            for busy in (one_more, request):
                assert busy.status_code == 503, busy.text
                assert busy.json()["code"] == "broker_unavailable"
                assert int(busy.headers["Retry-After"]) >= 1
            assert read.status_code == 200
            assert ready.json()["checks"]["database"] is True
            sent = await asyncio.gather(*in_flight)
            assert [answer.status_code for answer in sent] == [202, 202]
            decided = [await world.decided(supervisor, a.json()["command_id"]) for a in sent]
            assert [d["status"] for d in decided] == ["accepted", "accepted"]
    finally:
        broker.stop()

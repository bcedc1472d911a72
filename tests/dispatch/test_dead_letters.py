"""A ticket command dispatch gives up on may quote what an agent wrote to the customer: its dead
letter is sealed under the ticket's customer and replays as it came (real broker, real
PostgreSQL, intake and dispatch running)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.dispatch.app import build as dispatch
from services.dispatch.desk import CommandRefusal, Desk
from services.intake.app import build as intake
from shared.database import connect
from shared.deadletter import SEALED_FOR, DeadLetter, list_dead_letters, original_value
from shared.keystore import KeyStore, MasterKey
from shared.settings import Settings
from tests.dispatch.test_dispatch import EVENTS, data, kind, send_command
from tests.intake.requests import encode, intake_clock, valid
from tests.support.kafka import KafkaProbe
from tests.support.services import running
from tests.support.waiting import eventually

DRAFT = "your new PIN is 9921, sent by courier"


@pytest.mark.asyncio
async def test_a_command_given_up_on_is_dead_lettered_sealed_under_the_tickets_customer(
    settings: Settings, kafka: KafkaProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Desk.command

    def command(self: Desk, command: Any) -> CommandRefusal | None:
        if DRAFT in str(getattr(command, "message", "")):
            raise RuntimeError("a bug in respond")
        return real(self, command)

    monkeypatch.setattr(Desk, "command", command)
    settings = await intake_clock(
        settings.replace(consumer_max_attempts=2, consumer_retry_backoff="50ms")
    )
    keys = KeyStore(MasterKey.from_settings(settings))
    conn = await connect(settings.require_database_url())
    try:
        async with running(intake(settings)), running(dispatch(settings)):
            await kafka.publish("requests.incoming", encode(valid("m-1")), key="email:m-1")
            [assigned] = await kafka.await_records(EVENTS, kind("assigned"))
            number, agent = data(assigned)["number"], data(assigned)["agent_id"]
            await send_command(kafka, number, "respond", agent, message=DRAFT)
            letters: list[DeadLetter] = await eventually(
                lambda: list_dead_letters(conn, "dispatch"), bool, what="the dead letter"
            )
            [copy] = await kafka.await_records("tickets.commands.dlq", lambda r: True)
        [letter] = letters
        for stored in (letter.value, copy.value):
            assert b"9921" not in stored
            assert set(json.loads(stored)) == {"ref", "ct"}
        ref = dict(letter.headers)[SEALED_FOR]
        assert ref == await keys.find(conn, "email:wang.fang@example.com")
        assert copy.header(SEALED_FOR) == ref
        original = json.loads(await original_value(conn, letter, keys))
        assert (original["message"], original["ticket_number"]) == (DRAFT, number)
    finally:
        await conn.close()

"""A request intake gives up on is its customer's data still: its dead letter — the service's
table and ``requests.incoming.dlq`` — holds it sealed under their key, replays as it came, and is
unreadable once they are erased (real broker, real PostgreSQL, the service running)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import pytest_asyncio

from services.intake import handlers
from services.intake.app import build
from services.intake.contract import Request
from services.intake.triage import Triage
from shared.database import connect
from shared.deadletter import (
    SEALED_FOR,
    DeadLetter,
    ErasedDeadLetter,
    list_dead_letters,
    original_value,
    replay_dead_letter,
)
from shared.kafka import make_producer
from shared.keystore import KeyStore, MasterKey
from shared.settings import Settings
from tests.conftest import SettingsFactory
from tests.intake.requests import encode, intake_clock, valid
from tests.support.kafka import KafkaProbe
from tests.support.services import running
from tests.support.waiting import eventually

INCOMING, EVENTS = "requests.incoming", "intake.events"
SECRET = "the vault code is 4711"
EMAIL = "li.lei@example.com"


@pytest_asyncio.fixture
async def settings(make_settings: SettingsFactory) -> Settings:
    return await intake_clock(make_settings(consumer_max_attempts=2, consumer_retry_backoff="50ms"))


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Triage fails on a request that tells the vault code while ``poisoned[0]`` holds: a bug
    nobody has fixed yet, which is what sends a request to the dead letters."""
    armed = [True]
    real = handlers.triage  # type: ignore[attr-defined]

    def triage(request: Request, *args: object, **kwargs: object) -> Triage:
        if armed[0] and SECRET in request.description:
            raise RuntimeError("triage bug")
        return real(request, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(handlers, "triage", triage)
    return armed


@pytest.mark.asyncio
async def test_a_request_given_up_on_is_dead_lettered_sealed_and_replays_as_it_came(
    settings: Settings, kafka: KafkaProbe, poisoned: list[bool]
) -> None:
    customer = {"name": "李雷", "email": EMAIL, "phone": "+8613900001111"}
    raw = encode(valid("m-poison", customer=customer, description=f"Help: {SECRET}"))
    keys = KeyStore(MasterKey.from_settings(settings))
    conn = await connect(settings.require_database_url())
    try:
        async with running(build(settings)):
            await kafka.publish(INCOMING, raw, key="email:m-poison")
            await kafka.publish(INCOMING, encode(valid("m-fine")), key="email:m-fine")
            letters: list[DeadLetter] = await eventually(
                lambda: list_dead_letters(conn, "intake"), bool, what="the dead letter"
            )
            [letter] = letters
            [copy] = await kafka.await_records(f"{INCOMING}.dlq", lambda r: True, count=1)

            # Neither copy holds the request in clear; both name the customer's pseudonym.
            for stored in (letter.value, copy.value):
                for clear in (EMAIL, "李雷".encode(), SECRET, "+8613900001111"):
                    assert (clear.encode() if isinstance(clear, str) else clear) not in stored
                assert set(json.loads(stored)) == {"ref", "ct"}
            ref = dict(letter.headers)[SEALED_FOR]
            assert copy.header(SEALED_FOR) == ref == await keys.find(conn, f"email:{EMAIL}")
            assert letter.reason == "handler_failed"

            # Fixed, it is replayed as the adapter sent it, and becomes a ticket.
            poisoned[0] = False
            producer = make_producer(settings, client_id="test-replay")
            await producer.start()
            try:
                await replay_dead_letter(conn, producer, letter, keys)
            finally:
                await producer.stop()
            received = await kafka.await_records(
                EVENTS,
                lambda r: r.header("ce_type") == "servicedesk.ticket.received.v1",
                count=2,
            )
        replayed = [r for r in await kafka.all_records(INCOMING) if r.header("dlq_replayed_from")]
        assert [r.value for r in replayed] == [raw]
        assert len(received) == 2

        # Erased, the customer's dead letter opens no more: nothing of it to replay.
        assert await keys.erase(conn, ref, datetime.now(UTC))
        with pytest.raises(ErasedDeadLetter, match=ref):
            await original_value(conn, letter, KeyStore(MasterKey.from_settings(settings)))
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_an_adapter_cannot_mark_its_record_as_sealed(
    settings: Settings, kafka: KafkaProbe, poisoned: list[bool]
) -> None:
    """A ``dlq_sealed_for`` header an adapter sends is dropped: only the dead letter's writer
    says whose key seals it (else an adapter could make its own dead letter unreplayable, or
    name another customer's key)."""
    raw = encode(valid("m-forged", description=f"Help: {SECRET}"))
    conn = await connect(settings.require_database_url())
    try:
        async with running(build(settings)):
            await kafka.publish(
                INCOMING, raw, key="email:m-forged", headers=[(SEALED_FOR, b"cust-someone")]
            )
            [letter] = await eventually(
                lambda: list_dead_letters(conn, "intake"), bool, what="the dead letter"
            )
        refs = [v for k, v in letter.headers if k == SEALED_FOR]
        assert len(refs) == 1 and refs[0] != "cust-someone"
        keys = KeyStore(MasterKey.from_settings(settings))
        assert await original_value(conn, letter, keys) == raw
    finally:
        await conn.close()

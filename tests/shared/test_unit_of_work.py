"""The unit of work records every event with its cause: one recorder per cause, one append."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from shared.database import connect
from shared.events import Envelope, EventData, event
from shared.eventstore import ANY_VERSION, NO_STREAM, EventStore
from shared.migrations import kernel_migrations, migrate
from shared.settings import Settings
from shared.unit_of_work import Cause, UnitOfWork

SCHEMA = "uow_test"
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


@event("test.uow.noted", version=1)
class Noted(EventData):
    text: str


def envelope(correlation: str) -> Envelope:
    return Envelope(
        id=uuid4(),
        source="servicedesk/elsewhere",
        type=Noted.event_type(),
        time=NOW,
        streamid="elsewhere-1",
        streamversion=1,
        correlationid=correlation,
        data={"text": "upstream"},
    )


@pytest.mark.asyncio
async def test_each_recorder_gives_its_events_their_cause(settings: Settings) -> None:
    conn = await connect(settings.require_database_url())
    try:
        await migrate(conn, SCHEMA, kernel_migrations())
        store = EventStore(SCHEMA, "servicedesk/test")
        upstream = envelope("ticket-7")
        async with conn.transaction():
            uow = UnitOfWork(conn, store, NOW)
            by_event = uow.caused_by(upstream)
            by_command = uow.caused_by(Cause("ticket-8", "command-1"))
            by_request = uow.caused_by(Cause("ticket-9"))
            by_event("a", [Noted(text="1")], expected_version=NO_STREAM, subject="t7")
            by_command("b", [Noted(text="2")], expected_version=ANY_VERSION, subject="t8")
            by_request("c", [Noted(text="3")], expected_version=NO_STREAM)
            by_event("a", [Noted(text="4")], expected_version=1, subject="t7")
            assert uow.pending == 4
            await uow.flush()
        stored = {
            e.decode().text: e  # type: ignore[attr-defined]
            for stream in ("a", "b", "c")
            for e in await store.read_stream(conn, stream)
        }
    finally:
        await conn.close()
    causes = {text: (e.correlation_id, e.causation_id, e.subject) for text, e in stored.items()}
    assert causes == {
        "1": ("ticket-7", str(upstream.id), "t7"),
        "2": ("ticket-8", "command-1", "t8"),
        "3": ("ticket-9", None, None),
        "4": ("ticket-7", str(upstream.id), "t7"),
    }
    assert stored["4"].stream_version == 2
    assert stored["1"].envelope.correlationid == "ticket-7"
    assert stored["1"].envelope.causationid == str(upstream.id)


@pytest.mark.unit
def test_a_second_record_on_a_stream_must_follow_the_first() -> None:
    uow = UnitOfWork(conn=None, store=None, now=NOW)  # type: ignore[arg-type]
    record = uow.caused_by(Cause("c"))
    record("s", [Noted(text="1"), Noted(text="2")], expected_version=3)
    with pytest.raises(ValueError, match="expects version 4, but the first leaves it at 5"):
        record("s", [Noted(text="3")], expected_version=4)
    record("s", [Noted(text="3")], expected_version=5)
    assert uow.pending == 3


@pytest.mark.unit
def test_commit_callbacks_run_once_each_however_often_asked_for() -> None:
    uow = UnitOfWork(conn=None, store=None, now=NOW)  # type: ignore[arg-type]
    told: list[str] = []

    def wake() -> None:
        told.append("wake")

    uow.on_commit(wake)
    uow.on_commit(wake)  # two handlers' notices, one worker to wake
    uow.on_commit(lambda: told.append("other"))
    assert told == []  # nothing before the commit
    uow.committed()
    uow.committed()
    assert told == ["wake", "other"]

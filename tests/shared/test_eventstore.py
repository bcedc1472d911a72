"""The event store's promises, against a real PostgreSQL (docs/architecture.md lists them)."""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from pydantic_core import PydanticSerializationError

from shared.database import Connection, connect
from shared.events import EVENTS, EventData, event
from shared.eventstore import (
    ANY_VERSION,
    NO_STREAM,
    ConcurrencyError,
    EventStore,
    PendingEvent,
    StreamAppend,
)
from shared.migrations import kernel_migrations, migrate
from shared.personal import DataKeys, PersonalText
from shared.settings import Settings

SCHEMA = "store_test"


@event("test.store.noted", version=1)
class Noted(EventData):
    text: str
    writer: int = 0


def pending(text: str, writer: int = 0) -> PendingEvent:
    return PendingEvent(Noted(text=text, writer=writer), datetime.now(UTC), correlation_id="c-1")


@pytest_asyncio.fixture
async def store(settings: Settings) -> AsyncIterator[EventStore]:
    conn = await connect(settings.require_database_url())
    try:
        await migrate(conn, SCHEMA, kernel_migrations())
    finally:
        await conn.close()
    yield EventStore(SCHEMA, "servicedesk/test")


@pytest_asyncio.fixture
async def conn(settings: Settings, store: EventStore) -> AsyncIterator[Connection]:
    connection = await connect(settings.require_database_url(), schema=SCHEMA)
    yield connection
    await connection.close()


@pytest.mark.asyncio
async def test_read_subjects_reads_many_tickets_in_one_round_trip(
    store: EventStore, conn: Connection
) -> None:
    def about(subject: str, *texts: str) -> StreamAppend:
        now = datetime.now(UTC)
        events = [PendingEvent(Noted(text=t), now, "c", subject=subject) for t in texts]
        return StreamAppend(f"s-{subject}", ANY_VERSION, events)

    await store.append_many(conn, [about("t1", "a", "b"), about("t2", "c"), about("t3", "d")])
    await store.append_many(conn, [about("t1", "e")])
    found = await store.read_subjects(conn, ["t1", "t2", "t9"])
    assert {k: [e.decode().text for e in v] for k, v in found.items()} == {  # type: ignore[attr-defined]
        "t1": ["a", "b", "e"],
        "t2": ["c"],
        "t9": [],
    }
    assert await store.read_subjects(conn, ["t1"], types=["test.store.other.v1"]) == {"t1": []}
    typed = await store.read_subjects(conn, ["t3"], types=[Noted.event_type()])
    assert [e.decode().text for e in typed["t3"]] == ["d"]  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_read_subjects_data_gives_what_reading_whole_events_gives(
    store: EventStore, conn: Connection
) -> None:
    """The lean read of a what-if: type, time, id and the data's JSON text, a data string
    holding quotes and a ``,"data":`` of its own included."""
    now = datetime.now(UTC)
    tricky = 'he said ,"data": "no"'
    events = [PendingEvent(Noted(text=t), now, "c", subject="t7") for t in ("a", tricky)]
    await store.append_many(conn, [StreamAppend("s-t7", ANY_VERSION, events)])
    whole = (await store.read_subjects(conn, ["t7", "t8"]))["t7"]
    found = await store.read_subjects_data(conn, ["t7", "t8"], [Noted.event_type()])
    assert found["t8"] == []
    assert found["t7"] == [(e.type, e.time, str(e.id), e.data_json) for e in whole]
    assert [EVENTS.decode_json(kind, data) for kind, _, _, data in found["t7"]] == [
        Noted(text="a"),
        Noted(text=tricky),
    ]
    assert await store.read_subjects_data(conn, ["t7"], ["test.store.other.v1"]) == {"t7": []}


@pytest.mark.asyncio
async def test_append_and_read_a_stream(store: EventStore, conn: Connection) -> None:
    done = await store.append(conn, "s-1", NO_STREAM, [pending("a"), pending("b")])
    assert [d.stream_version for d in done] == [1, 2]
    assert done[0].position < done[1].position
    more = await store.append(conn, "s-1", 2, [pending("c")])
    assert more[0].stream_version == 3

    events = await store.read_stream(conn, "s-1")
    assert [e.decode() for e in events] == [Noted(text="a"), Noted(text="b"), Noted(text="c")]
    assert [e.stream_version for e in events] == [1, 2, 3]
    assert [e.envelope.streamversion for e in events] == [1, 2, 3]
    assert events[0].envelope.source == "servicedesk/test"
    assert events[0].envelope.type == "test.store.noted.v1"
    assert [e.stream_version for e in await store.read_stream(conn, "s-1", after_version=2)] == [3]
    assert await store.stream_version(conn, "s-1") == 3


@pytest.mark.asyncio
async def test_a_stale_expected_version_names_stream_and_versions(
    store: EventStore, conn: Connection
) -> None:
    await store.append(conn, "s-2", NO_STREAM, [pending("a")])
    with pytest.raises(ConcurrencyError) as caught:
        await store.append(conn, "s-2", NO_STREAM, [pending("b")])
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == ("s-2", 0, 1)
    assert "s-2" in str(caught.value)
    with pytest.raises(ConcurrencyError, match="expected version 5, actual 1"):
        await store.append(conn, "s-2", 5, [pending("b")])
    assert len(await store.read_stream(conn, "s-2")) == 1


@pytest.mark.asyncio
async def test_any_version_appends_after_whatever_is_there(
    store: EventStore, conn: Connection
) -> None:
    await store.append(conn, "s-3", ANY_VERSION, [pending("a")])
    await store.append(conn, "s-3", ANY_VERSION, [pending("b"), pending("c")])
    assert [e.stream_version for e in await store.read_stream(conn, "s-3")] == [1, 2, 3]


@pytest.mark.asyncio
async def test_append_many_is_all_or_nothing(store: EventStore, conn: Connection) -> None:
    await store.append(conn, "taken", NO_STREAM, [pending("x")])
    with pytest.raises(ConcurrencyError):
        await store.append_many(
            conn,
            [
                StreamAppend("fresh", NO_STREAM, [pending("1")]),
                StreamAppend("taken", NO_STREAM, [pending("2")]),
            ],
        )
    assert await store.read_stream(conn, "fresh") == []
    done = await store.append_many(
        conn,
        [
            StreamAppend("fresh", NO_STREAM, [pending("1"), pending("2")]),
            StreamAppend("taken", 1, [pending("3")]),
        ],
    )
    assert sorted((d.stream_version) for d in done) == [1, 2, 2]


@event("test.store.confided", version=1)
class Confided(EventData):
    secret: PersonalText


@pytest.mark.asyncio
async def test_a_store_that_takes_only_sealed_fields_refuses_clear_text(
    store: EventStore, conn: Connection
) -> None:
    sealed_only = EventStore(SCHEMA, "servicedesk/test", sealed_only=True)
    now = datetime.now(UTC)
    clear = PendingEvent(Confided(secret="Wang Fang's PIN"), now, "c")
    with pytest.raises(PydanticSerializationError, match="in clear"):
        await sealed_only.append(conn, "leaky", NO_STREAM, [clear])
    assert await store.read_stream(conn, "leaky") == []

    ring = DataKeys({"cust-1": secrets.token_bytes(32)})
    sealed = PendingEvent(ring.seal(Confided(secret="Wang Fang's PIN"), "cust-1"), now, "c")
    await sealed_only.append(conn, "tight", NO_STREAM, [sealed])
    (stored,) = await store.read_stream(conn, "tight")
    assert "Wang" not in stored.data_json
    # Any other store writes what it is given.
    await store.append(conn, "plain", NO_STREAM, [clear])


@pytest.mark.asyncio
async def test_two_writers_at_one_expected_version_exactly_one_wins(
    settings: Settings, store: EventStore, conn: Connection
) -> None:
    await store.append(conn, "contested", NO_STREAM, [pending("start")])
    url = settings.require_database_url()
    writers = [await connect(url, schema=SCHEMA) for _ in range(2)]
    gate = asyncio.Event()

    async def write(c: Connection, text: str) -> str:
        async with c.transaction():
            await gate.wait()
            try:
                await store.append(c, "contested", 1, [pending(text)])
            except ConcurrencyError as error:
                return f"conflict {error.expected}->{error.actual}"
            await asyncio.sleep(0.05)  # hold the transaction open: the other must wait, then lose
            return "won"

    try:
        tasks = [asyncio.create_task(write(c, f"w{i}")) for i, c in enumerate(writers)]
        await asyncio.sleep(0.05)
        gate.set()
        outcomes = sorted(await asyncio.gather(*tasks))
    finally:
        for c in writers:
            await c.close()
    assert outcomes == ["conflict 1->2", "won"]
    assert [e.stream_version for e in await store.read_stream(conn, "contested")] == [1, 2]


@pytest.mark.asyncio
async def test_a_reader_following_the_log_sees_every_event_once_in_commit_order(
    settings: Settings, store: EventStore, conn: Connection
) -> None:
    """8 concurrent writers x 500 appends, each holding its transaction open for a random time
    after appending; a reader polling read_all meanwhile must see every event exactly once,
    with each stream's versions in order."""
    writers, appends = 8, 500
    url = settings.require_database_url()
    rng = random.Random(7)
    done = asyncio.Event()

    async def writer(n: int) -> None:
        c = await connect(url, schema=SCHEMA)
        try:
            for i in range(appends):
                stream = f"w{n}-s{i % 5}"
                async with c.transaction():
                    await store.append(c, stream, ANY_VERSION, [pending(f"{n}:{i}", writer=n)])
                    await asyncio.sleep(rng.random() * 0.002)  # commit delay while appended
        finally:
            await c.close()

    seen: list[tuple[int, str, int]] = []

    async def reader() -> None:
        position = 0
        while True:
            finished = done.is_set()
            batch = await store.read_all(conn, after=position, limit=500)
            for e in batch:
                seen.append((e.position, e.stream_id, e.stream_version))
            if batch:
                position = batch[-1].position
            elif finished:
                return
            else:
                await asyncio.sleep(0.001)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(n) for n in range(writers)))
    done.set()
    await reading

    total = writers * appends
    assert len(seen) == total
    assert len({p for p, _, _ in seen}) == total, "an event was seen twice"
    assert [p for p, _, _ in seen] == sorted(p for p, _, _ in seen)
    versions: dict[str, list[int]] = {}
    for _, stream, version in seen:
        versions.setdefault(stream, []).append(version)
    assert len(versions) == writers * 5
    for stream, got in versions.items():
        assert got == list(range(1, len(got) + 1)), f"{stream} versions out of order: {got[:10]}"
    assert await store.head(conn) == max(p for p, _, _ in seen)

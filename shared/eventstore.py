"""The event store of one service: optimistic appends, reading a stream, following the log.

Every state change in servicedesk is an event appended here, and this table is also the outbox:
the relay publishes from it in ``position`` order. The SQL lives in ``shared/sql``; the
promises it keeps are listed in ``docs/architecture.md`` and tested in
``tests/shared/test_eventstore.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
from pydantic_core import to_json

from shared.database import Connection, identifier
from shared.events import (
    EVENTS,
    SPEC_VERSION,
    Envelope,
    EventData,
    EventRegistry,
    format_time,
    new_event_id,
)
from shared.personal import SEALED_ONLY, seal_pending

ANY_VERSION: None = None
"""Expected version meaning "append whatever the stream's version is"."""
NO_STREAM = 0
"""Expected version meaning "the stream must not exist yet"."""

if TYPE_CHECKING:
    from shared.keystore import KeyStore

_CONFLICT = "SD409"


class ConcurrencyError(Exception):
    """Someone else appended to the stream since its version was read."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream_id}: expected version {expected}, actual {actual}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class EventTooLarge(ValueError):
    """An event larger than the broker would take: stored, it would stop the relay for good."""


@dataclass(slots=True)
class PendingEvent:
    """An event on its way into a stream, with its causal metadata."""

    data: EventData
    time: datetime
    correlation_id: str
    causation_id: str | None = None
    subject: str | None = None
    id: UUID = field(default_factory=new_event_id)


@dataclass(slots=True)
class StreamAppend:
    """Events for one stream, appended only if the stream is at ``expected_version``."""

    stream_id: str
    expected_version: int | None
    events: list[PendingEvent]


@dataclass(slots=True)
class RecordedEvent:
    """An event as stored: its global position plus the envelope."""

    position: int
    id: UUID
    stream_id: str
    stream_version: int
    type: str
    subject: str | None
    time: datetime
    raw: str = ""
    """The envelope exactly as stored and published (JSON text); empty for a just-flushed event."""
    typed: EventData | None = None
    """The data, when the event was just recorded in this process and needs no decoding."""
    correlation_id: str | None = None
    causation_id: str | None = None

    @property
    def envelope(self) -> Envelope:
        if not self.raw:
            raise ValueError("this event was recorded in this process; read it from the store")
        return Envelope.model_validate_json(self.raw)

    def decode(self, registry: EventRegistry = EVENTS) -> EventData:
        if self.typed is not None:
            return self.typed
        return registry.decode_json(self.type, self.data_json)

    @property
    def data_json(self) -> str:
        """The data's JSON text: the stored envelope's last member (see ``_envelope_json``;
        inside JSON strings every quote is escaped, so the first ``,"data":`` is the member)."""
        if not self.raw:
            raise ValueError("this event was recorded in this process; read it from the store")
        return self.raw[self.raw.index(',"data":') + 8 : -1]


@dataclass(slots=True)
class Appended:
    event_id: UUID
    position: int
    stream_version: int


_COLUMNS = (
    "position, event_id, stream_id, stream_version, type, subject, occurred_at, envelope::text, "
    "correlation_id, causation_id"
)


class EventStore:
    """Events of one service, kept in that service's schema."""

    def __init__(
        self,
        schema: str,
        source: str,
        event_types: set[str] | None = None,
        max_event_bytes: int | None = None,
        sealing: KeyStore | None = None,
        *,
        sealed_only: bool = False,
    ) -> None:
        self.schema = identifier(schema)
        self.source = source
        self.event_types = event_types
        """When given, the only types this store accepts (each has a topic to go to)."""
        self.max_event_bytes = max_event_bytes
        """When given, the largest envelope an append takes (what the broker will publish)."""
        self.sealing = sealing
        """When given, personal fields bound for a subject (:func:`shared.personal.for_subject`)
        are sealed with its key as they are appended."""
        self.sealed_only = sealed_only
        """Whether an event with a personal field in clear is refused (its writer seals every
        one itself): the last check before the bytes are written, whatever the code before."""
        self._context = SEALED_ONLY if sealed_only else None
        self._append_sql = (
            "SELECT event_id, event_position, event_stream_version "
            f"FROM {self.schema}.append_events("
            "$1::text[], $2::integer[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[], "
            "$7::text[], $8::text[], $9::text[])"
        )

    @property
    def table(self) -> str:
        """The events table (what projections following this store lock to catch up)."""
        return f"{self.schema}.events"

    async def append(
        self,
        conn: Connection,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[PendingEvent],
    ) -> list[Appended]:
        """Append to one stream in one round trip; raise :class:`ConcurrencyError` on a race."""
        return await self.append_many(
            conn, [StreamAppend(stream_id, expected_version, list(events))]
        )

    async def append_many(
        self, conn: Connection, appends: Sequence[StreamAppend]
    ) -> list[Appended]:
        """Append to several streams in one round trip, all or nothing."""
        if self.sealing is not None:
            await self._seal(conn, appends)
        stream_ids: list[str] = []
        expected: list[int | None] = []
        ids: list[UUID] = []
        types: list[str] = []
        subjects: list[str | None] = []
        times: list[datetime] = []
        correlations: list[str] = []
        causations: list[str | None] = []
        envelopes: list[str] = []
        for append in appends:
            for pending in append.events:
                event_type = pending.data.event_type()
                if self.event_types is not None and event_type not in self.event_types:
                    raise ValueError(
                        f"{event_type} is not published by {self.source}; "
                        "declare it in the service's publishes"
                    )
                stream_ids.append(append.stream_id)
                expected.append(append.expected_version)
                ids.append(pending.id)
                types.append(event_type)
                subjects.append(pending.subject)
                times.append(pending.time)
                correlations.append(pending.correlation_id)
                causations.append(pending.causation_id)
                envelope = self._envelope_json(append.stream_id, pending, event_type)
                self._check_size(envelope, event_type)
                envelopes.append(envelope)
        if not ids:
            return []
        try:
            rows = await conn.fetch(
                self._append_sql,
                stream_ids,
                expected,
                ids,
                types,
                subjects,
                times,
                correlations,
                causations,
                envelopes,
            )
        except asyncpg.PostgresError as error:
            if getattr(error, "sqlstate", None) == _CONFLICT:
                detail = json.loads(getattr(error, "detail", None) or "{}")
                raise ConcurrencyError(
                    detail.get("stream_id", "?"),
                    detail.get("expected", -1),
                    detail.get("actual", -1),
                ) from None
            raise
        return [Appended(r[0], r[1], r[2]) for r in rows]

    async def _seal(self, conn: Connection, appends: Sequence[StreamAppend]) -> None:
        assert self.sealing is not None
        pending = [p for a in appends for p in a.events]
        sealed = await seal_pending(self.sealing, conn, [p.data for p in pending])
        for event, data in zip(pending, sealed, strict=True):
            event.data = data

    def _check_size(self, envelope: str, event_type: str) -> None:
        limit = self.max_event_bytes
        # Characters are 1-4 bytes of UTF-8: most envelopes pass without being encoded.
        if limit is None or len(envelope) * 4 <= limit:
            return
        size = len(envelope.encode())
        if size > limit:
            raise EventTooLarge(f"{event_type}: {size} bytes; the broker takes at most {limit}")

    def _envelope_json(self, stream_id: str, pending: PendingEvent, event_type: str) -> str:
        """The envelope as stored: everything but ``streamversion`` (see :func:`with_version`).

        Built by hand rather than through :class:`Envelope`: this runs for every event appended,
        and the data model has validated itself already.
        """
        head = {
            "specversion": SPEC_VERSION,
            "id": str(pending.id),
            "source": self.source,
            "type": event_type,
            "subject": pending.subject,
            "time": format_time(pending.time),
            "datacontenttype": "application/json",
            "streamid": stream_id,
            "correlationid": pending.correlation_id,
            "causationid": pending.causation_id,
        }
        data = pending.data.model_dump_json(context=self._context)
        return f'{to_json(head).decode()[:-1]},"data":{data}}}'

    async def read_stream(
        self, conn: Connection, stream_id: str, after_version: int = 0
    ) -> list[RecordedEvent]:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM {self.schema}.events "
            "WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version",
            stream_id,
            after_version,
        )
        return [_recorded(r) for r in rows]

    async def read_streams(
        self, conn: Connection, stream_ids: Sequence[str]
    ) -> dict[str, list[RecordedEvent]]:
        """Several whole streams in one round trip (batch handlers load their state this way)."""
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM {self.schema}.events "
            "WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, stream_version",
            list(stream_ids),
        )
        streams: dict[str, list[RecordedEvent]] = {s: [] for s in stream_ids}
        for row in rows:
            streams[row["stream_id"]].append(_recorded(row))
        return streams

    async def stream_version(self, conn: Connection, stream_id: str) -> int:
        version = await conn.fetchval(
            f"SELECT version FROM {self.schema}.streams WHERE stream_id = $1", stream_id
        )
        return int(version or 0)

    async def read_all(
        self, conn: Connection, after: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        """Events after a position, in position order (which is commit order)."""
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM {self.schema}.events "
            "WHERE position > $1 ORDER BY position LIMIT $2",
            after,
            limit,
        )
        return [_recorded(r) for r in rows]

    async def read_subject(self, conn: Connection, subject: str) -> list[RecordedEvent]:
        """Every event about one ticket, in position order."""
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM {self.schema}.events WHERE subject = $1 ORDER BY position",
            subject,
        )
        return [_recorded(r) for r in rows]

    async def read_subjects(
        self, conn: Connection, subjects: Sequence[str], types: Sequence[str] | None = None
    ) -> dict[str, list[RecordedEvent]]:
        """The events about many tickets (of ``types``, if given) in one round trip: each
        ticket's in position order."""
        found: dict[str, list[RecordedEvent]] = {s: [] for s in subjects}
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM {self.schema}.events WHERE subject = ANY($1::text[]) "
            "AND ($2::text[] IS NULL OR type = ANY($2::text[])) ORDER BY subject, position",
            list(subjects),
            None if types is None else list(types),
        )
        for row in rows:
            found[row["subject"]].append(_recorded(row))
        return found

    async def read_subjects_data(
        self, conn: Connection, subjects: Sequence[str], types: Sequence[str]
    ) -> dict[str, list[tuple[str, datetime, str, str]]]:
        """:meth:`read_subjects` for replays of many tickets: each event as only its type,
        time, id and data's JSON text (cut out of the stored envelope by the database), no
        envelope rebuilt and nothing decoded: a what-if reads hundreds of thousands."""
        found: dict[str, list[tuple[str, datetime, str, str]]] = {s: [] for s in subjects}
        rows = await conn.fetch(
            "SELECT subject, type, occurred_at, event_id::text, "
            "left(substr(stored, strpos(stored, ',\"data\":') + 8), -1) "
            f"FROM {self.schema}.events, LATERAL (SELECT envelope::text AS stored) AS e "
            "WHERE subject = ANY($1::text[]) AND type = ANY($2::text[]) ORDER BY subject, position",
            list(subjects),
            list(types),
        )
        for subject, kind, at, event_id, data in rows:
            found[subject].append((kind, at, event_id, data))
        return found

    async def head(self, conn: Connection) -> int:
        """The position of the newest event (0 for an empty store)."""
        value = await conn.fetchval(f"SELECT max(position) FROM {self.schema}.events")
        return int(value or 0)


def with_version(stored: str, stream_version: int) -> str:
    """The complete envelope: the stored JSON object plus its ``streamversion``."""
    return f'{{"streamversion":{stream_version},{stored[1:]}'


def _recorded(row: Any) -> RecordedEvent:
    return recorded(row, with_version(row[7], row[3]))


def recorded(row: Any, envelope: str) -> RecordedEvent:
    """An event read from a log table whose columns come in the order of the event store's
    (position, id, stream, version, type, subject, time, _, correlation, causation), with its
    complete envelope (a journal of published events keeps it whole)."""
    return RecordedEvent(
        position=row[0],
        id=row[1],
        stream_id=row[2],
        stream_version=row[3],
        type=row[4],
        subject=row[5],
        time=row[6],
        raw=envelope,
        correlation_id=row[8],
        causation_id=row[9],
    )

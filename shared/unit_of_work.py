"""The unit of work a handler runs in: one database transaction, its new events, its projections.

A handler never appends directly. It *records* events on the unit of work; when the handler
returns, the consumer plumbing flushes every stream's events in one round trip, applies the
inline projections to them, marks the messages as processed, and commits — all in the same
transaction. So either all of a message's effects exist or none do.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from shared.database import Connection
from shared.events import Envelope, EventData
from shared.eventstore import EventStore, PendingEvent, RecordedEvent, StreamAppend

if TYPE_CHECKING:
    from shared.projection import Projection


class UnitOfWork:
    """One transaction's connection, its clock reading and the events it will append."""

    def __init__(
        self,
        conn: Connection,
        store: EventStore,
        now: datetime,
        projections: Sequence[Projection] = (),
    ) -> None:
        self.conn = conn
        self.store = store
        self.now = now
        self._projections = projections
        self._appends: dict[str, StreamAppend] = {}

    def record(
        self,
        stream_id: str,
        events: Sequence[EventData],
        *,
        expected_version: int | None,
        cause: Envelope | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        subject: str | None = None,
    ) -> None:
        """Queue events for ``stream_id``; they are appended when the handler returns.

        ``cause`` is the event being handled: its id becomes the causation id and its
        correlation id is carried on. Without one (a command, a request), ``correlation_id`` and
        ``causation_id`` say it. Recording twice for one stream in one unit of work continues
        from the first record (the second ``expected_version`` must follow it).
        """
        if cause is not None:
            correlation = cause.correlationid
            causation: str | None = str(cause.id)
        else:
            if correlation_id is None:
                raise ValueError("an event needs a cause or a correlation id")
            correlation, causation = correlation_id, causation_id
        pending = [
            PendingEvent(
                data=data,
                time=self.now,
                correlation_id=correlation,
                causation_id=causation,
                subject=subject,
            )
            for data in events
        ]
        queued = self._appends.get(stream_id)
        if queued is None:
            self._appends[stream_id] = StreamAppend(stream_id, expected_version, pending)
            return
        if expected_version is not None and queued.expected_version is not None:
            follows = queued.expected_version + len(queued.events)
            if expected_version != follows:
                raise ValueError(
                    f"stream {stream_id}: second record expects version {expected_version}, "
                    f"but the first leaves it at {follows}"
                )
        queued.events.extend(pending)

    @property
    def pending(self) -> int:
        return sum(len(a.events) for a in self._appends.values())

    async def flush(self) -> list[RecordedEvent]:
        """Feed the inline projections, then append everything recorded in one round trip.

        Projections first: the append takes the store's lock, held until commit, so the less
        that follows it the better.
        """
        appends = list(self._appends.values())
        self._appends.clear()
        if not appends:
            return []
        recorded = [
            RecordedEvent(
                position=0,
                id=pending.id,
                stream_id=append.stream_id,
                stream_version=0,
                type=pending.data.event_type(),
                subject=pending.subject,
                time=pending.time,
                typed=pending.data,
                correlation_id=pending.correlation_id,
                causation_id=pending.causation_id,
            )
            for append in appends
            for pending in append.events
        ]
        for projection in self._projections:
            await projection.apply(self.conn, recorded)
        appended = {a.event_id: a for a in await self.store.append_many(self.conn, appends)}
        for event in recorded:
            done = appended[event.id]
            event.position, event.stream_version = done.position, done.stream_version
        recorded.sort(key=lambda e: e.position)
        for projection in self._projections:
            await projection.checkpoint_to(self.conn, recorded[-1].position)
        return recorded

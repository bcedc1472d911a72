"""The unit of work a handler runs in: one database transaction, its new events, its projections.

A handler never appends directly. It *records* events through a recorder the unit of work gives
for each cause (:meth:`UnitOfWork.caused_by`); when the handler returns, the consumer plumbing
flushes every stream's events in one round trip, applies the inline projections to them, marks
the messages as processed, and commits — all in the same transaction. So either all of a
message's effects exist or none do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Protocol

from shared.database import Connection
from shared.events import Envelope, EventData
from shared.eventstore import EventStore, PendingEvent, RecordedEvent, StreamAppend
from shared.projection import Projection, checkpoint_all


@dataclass(frozen=True, slots=True)
class Cause:
    """Why events happen: the correlation id every event one request set off shares, and the id
    of the message that caused them (none for a request that starts a story)."""

    correlation_id: str
    causation_id: str | None = None

    @classmethod
    def of(cls, envelope: Envelope) -> Cause:
        """An event being handled: its correlation goes on, its id is the causation."""
        return cls(envelope.correlationid, str(envelope.id))


class Recorder(Protocol):
    """Records events on a stream, all with one cause; pure domain code records through one
    (the unit of work's in production, a list in unit tests)."""

    def __call__(
        self,
        stream_id: str,
        events: Sequence[EventData],
        *,
        expected_version: int | None,
        subject: str | None = None,
    ) -> None: ...


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
        self._on_commit: list[Callable[[], None]] = []

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this unit of work's transaction has committed (never if it
        rolls back): a worker of the same process told of rows it can now see, rather than
        finding them at its next poll. Run by the consumer plumbing (:meth:`committed`)."""
        if callback not in self._on_commit:
            self._on_commit.append(callback)

    def committed(self) -> None:
        """The transaction committed: run the ``on_commit`` callbacks, once."""
        callbacks, self._on_commit = self._on_commit, []
        for callback in callbacks:
            callback()

    def caused_by(self, cause: Envelope | Cause) -> Recorder:
        """The recorder of events caused by ``cause``: an event being handled (its envelope), or
        a command's or request's ids.

        Events are appended when the handler returns. Recording twice for one stream in one unit
        of work continues from the first record (the second ``expected_version`` must follow it).
        """
        return partial(self._queue, Cause.of(cause) if isinstance(cause, Envelope) else cause)

    def _queue(
        self,
        cause: Cause,
        stream_id: str,
        events: Sequence[EventData],
        expected_version: int | None,
        subject: str | None = None,
    ) -> None:
        pending = [
            PendingEvent(
                data=data,
                time=self.now,
                correlation_id=cause.correlation_id,
                causation_id=cause.causation_id,
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
        await checkpoint_all(self.conn, self._projections, recorded[-1].position)
        return recorded

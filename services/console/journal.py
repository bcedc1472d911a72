"""The console's journal: the public events it read, exactly as published, in the order it read
them. Its read models are projections of the journal (:mod:`shared.projection`): applied in the
transaction that journals a batch, caught up at start, rebuilt by replaying it.

Appends take the journal's table lock until commit, as the event store does, so positions are
handed out in commit order and a projection's checkpoint never passes an event still to commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.consumer import Delivered, Inbound
from shared.database import Connection
from shared.eventstore import RecordedEvent, recorded

_COLUMNS = (
    "position, event_id, stream_id, stream_version, type, subject, occurred_at, envelope, "
    "correlation_id, causation_id"
)


class Journal:
    """The ``journal`` table of the console's schema, as a :class:`shared.projection.Log`."""

    def __init__(self, schema: str) -> None:
        self.schema = schema

    @property
    def table(self) -> str:
        return f"{self.schema}.journal"

    async def record(
        self, conn: Connection, messages: Sequence[Inbound[Delivered]]
    ) -> list[RecordedEvent]:
        """Journal a batch (events journaled before are skipped); return the new entries."""
        if not messages:
            return []
        await conn.execute(f"LOCK TABLE {self.table} IN EXCLUSIVE MODE")
        rows = await conn.fetch(
            f"INSERT INTO {self.table} (event_id, topic, type, stream_id, stream_version, subject, "
            "occurred_at, correlation_id, causation_id, envelope) "
            "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], "
            "$6::text[], $7::timestamptz[], $8::text[], $9::text[], $10::text[]) "
            "ON CONFLICT (event_id) DO NOTHING RETURNING position, event_id",
            *_columns(messages),
        )
        positions = {row[1]: row[0] for row in rows}
        journaled = []
        for inbound in messages:
            envelope = inbound.message.envelope
            if envelope.id not in positions:
                continue
            journaled.append(
                RecordedEvent(
                    position=positions.pop(envelope.id),
                    id=envelope.id,
                    stream_id=envelope.streamid,
                    stream_version=envelope.streamversion,
                    type=envelope.type,
                    subject=envelope.subject,
                    time=envelope.time,
                    raw=inbound.record.value.decode("utf-8", "replace"),
                    typed=inbound.message.data,
                    correlation_id=envelope.correlationid,
                    causation_id=envelope.causationid,
                )
            )
        journaled.sort(key=lambda e: e.position)
        return journaled

    async def read_all(
        self, conn: Connection, after: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM {self.table} WHERE position > $1 ORDER BY position LIMIT $2",
            after,
            limit,
        )
        return [recorded(row, row[7]) for row in rows]


def _columns(messages: Sequence[Inbound[Delivered]]) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(10)]
    for inbound in messages:
        envelope = inbound.message.envelope
        values = (
            envelope.id,
            inbound.record.topic,
            envelope.type,
            envelope.streamid,
            envelope.streamversion,
            envelope.subject,
            envelope.time,
            envelope.correlationid,
            envelope.causationid,
            inbound.record.value.decode("utf-8", "replace"),
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns

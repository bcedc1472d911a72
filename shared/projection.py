"""Projections: read models fed from a service's own event log.

A projection is applied *inline*: in the transaction that appends the events, so the read model
is never behind the events a handler just recorded (dispatch routes on agent load; it cannot
route on a stale view). It runs just before the append, so the store's append lock is held as
briefly as possible; its checkpoint, written after the append in the same transaction, then
names the last position. At start a service
catches each projection up to the head of the log (a projection added later starts from zero),
and ``rebuild`` drops a projection's tables' contents and replays the whole log into them — the
proof that a read model holds nothing the events do not.

The log is the service's event store, or any :class:`Log` of the same shape: the console keeps a
journal of the public events it reads and folds its read models from that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

from shared.database import Connection, identifier
from shared.eventstore import RecordedEvent
from shared.logging import get_logger

log = get_logger(__name__)


class Log(Protocol):
    """What a projection follows: events in position order (commit order), one table."""

    @property
    def table(self) -> str:
        """The log's table, schema-qualified (locked while a projection catches up)."""

    async def read_all(
        self, conn: Connection, after: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]: ...


class Projection(ABC):
    """A read model: its tables and how each event changes them."""

    name: str
    tables: tuple[str, ...]
    """Tables owned by this projection, emptied on rebuild."""

    @abstractmethod
    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        """Change the read model for these events, in log order.

        Applied inline, the events have no position yet (it is 0): a read model that needs
        positions must not rely on them here.
        """

    @property
    def checkpoint_name(self) -> str:
        return f"projection:{self.name}"

    async def checkpoint_to(self, conn: Connection, position: int) -> None:
        await checkpoint_all(conn, [self], position)

    async def apply_and_checkpoint(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        if not events:
            return
        await self.apply(conn, events)
        await self.checkpoint_to(conn, events[-1].position)

    async def checkpoint(self, conn: Connection) -> int:
        value = await conn.fetchval(
            "SELECT position FROM checkpoints WHERE name = $1", self.checkpoint_name
        )
        return int(value or 0)


async def checkpoint_all(
    conn: Connection, projections: Sequence[Projection], position: int
) -> None:
    """Every projection's checkpoint moved to ``position`` in one statement: a batch pays one
    round trip for its read models' checkpoints, however many it feeds (the console, five)."""
    if projections:
        await conn.execute(
            "INSERT INTO checkpoints (name, position) SELECT unnest($1::text[]), $2 "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now()",
            [projection.checkpoint_name for projection in projections],
            position,
        )


async def catch_up(conn: Connection, store: Log, projection: Projection, chunk: int = 2000) -> int:
    """Apply every event after the projection's checkpoint; return how many."""
    applied = 0
    async with conn.transaction():
        # Appends wait while we catch up, so nothing lands behind our reading position.
        await conn.execute(f"LOCK TABLE {store.table} IN SHARE MODE")
        position = await projection.checkpoint(conn)
        while True:
            events = await store.read_all(conn, after=position, limit=chunk)
            if not events:
                break
            await projection.apply_and_checkpoint(conn, events)
            position = events[-1].position
            applied += len(events)
    if applied:
        log.info("projection caught up", projection=projection.name, events=applied)
    return applied


async def rebuild(conn: Connection, store: Log, projection: Projection) -> int:
    """Empty the projection's tables and replay the whole log into them."""
    async with conn.transaction():
        await conn.execute(f"LOCK TABLE {store.table} IN SHARE MODE")
        tables = ", ".join(identifier(t) for t in projection.tables)
        await conn.execute(f"TRUNCATE {tables}")
        await conn.execute("DELETE FROM checkpoints WHERE name = $1", projection.checkpoint_name)
        return await catch_up(conn, store, projection)

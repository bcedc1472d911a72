"""What operators' tools read of intake's tables (``desk ticket show``)."""

from __future__ import annotations

from shared.database import Connection


async def ticket_id(conn: Connection, number: str) -> str | None:
    """The id of the ticket with this number; None if intake has none (or no tables yet)."""
    if await conn.fetchval("SELECT to_regclass('intake.tickets')") is None:
        return None
    found = await conn.fetchval(
        "SELECT ticket_id::text FROM intake.tickets WHERE number = $1", number
    )
    return str(found) if found else None

"""What operators' tools read of intake's tables (``desk ticket show``, ``desk triage review``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from services.intake.events import TicketReceived, TicketTriaged
from services.intake.review import RuleReview, Triaged, review
from shared.database import Connection

__all__ = ["RuleReview", "ticket_id", "triage_review"]


async def ticket_id(conn: Connection, number: str) -> str | None:
    """The id of the ticket with this number; None if intake has none (or no tables yet)."""
    if await conn.fetchval("SELECT to_regclass('intake.tickets')") is None:
        return None
    found = await conn.fetchval(
        "SELECT ticket_id::text FROM intake.tickets WHERE number = $1", number
    )
    return str(found) if found else None


async def triage_review(
    conn: Connection, since: datetime, corrections: Mapping[str, str]
) -> list[RuleReview]:
    """Each triage rule's tickets since ``since``, against agents' corrections (ticket id ->
    what it was corrected to: dispatch's reclassifications)."""
    if await conn.fetchval("SELECT to_regclass('intake.events')") is None:
        return []
    rows = await conn.fetch(
        "SELECT subject, type, envelope->>'data' FROM intake.events "
        "WHERE type = ANY($1::text[]) AND occurred_at >= $2 ORDER BY position",
        [TicketReceived.event_type(), TicketTriaged.event_type()],
        since,
    )
    texts: dict[str, str] = {}
    rules: dict[str, str] = {}
    for subject, kind, data in rows:
        found = json.loads(data)
        if kind == TicketTriaged.event_type():
            rules[subject] = found["rule"]
        else:
            texts[subject] = f"{found['subject']}\n{found['description']}"
    tickets = (Triaged(t, rule, texts.get(t, "")) for t, rule in rules.items())
    return review(tickets, corrections)

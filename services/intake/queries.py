"""What operators' tools read of intake's tables (``desk ticket show``, ``desk triage review``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from services.intake.events import TicketReceived, TicketTriaged
from services.intake.review import RuleReview, Triaged, review
from shared.database import Connection
from shared.keystore import KeyStore
from shared.personal import Erased, keys_for

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
    conn: Connection, since: datetime, corrections: Mapping[str, str], keys: KeyStore
) -> list[RuleReview]:
    """Each triage rule's tickets since ``since``, against agents' corrections (ticket id ->
    what it was corrected to: dispatch's reclassifications). The texts are opened with the
    customers' keys (an erased customer's count, their words do not)."""
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
    documents = [(subject, kind, json.loads(data)) for subject, kind, data in rows]
    opening = await keys_for(keys, conn, [d for _, _, d in documents])
    for subject, kind, found in documents:
        if kind == TicketTriaged.event_type():
            rules[subject] = found["rule"]
        else:
            text = opening.reveal_json({"s": found["subject"], "d": found["description"]})
            texts[subject] = (
                ""
                if any(isinstance(v, Erased) for v in text.values())
                else f"{text['s']}\n{text['d']}"
            )
    tickets = (Triaged(t, rule, texts.get(t, "")) for t, rule in rules.items())
    return review(tickets, corrections)

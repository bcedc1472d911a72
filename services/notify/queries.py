"""What notify holds about one customer, for ``desk customer export`` (the access right).

Every notice whose text is sealed under the customer's pseudonym — those sent to them, and the
agents' that repeat what they wrote — is data about them, beside the events that made it. An
agent's own address is the agent's, not the customer's, and is left out.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.database import Connection
from shared.keystore import KeyStore
from shared.personal import from_column, keys_for

_NOTICES = (
    "SELECT number, recipient, channel, address, template, language, subject, body, status, "
    "attempts, created_at, finished_at FROM notify.deliveries "
    "WHERE strpos(subject, $1) > 0 OR customer_ref = $2 ORDER BY id"
)


async def customer_notices(conn: Connection, keys: KeyStore, ref: str) -> list[dict[str, Any]]:
    """The notices about the customer ``ref``, opened (``erased`` once their key is gone)."""
    try:
        rows = await conn.fetch(_NOTICES, f'"{ref}"', ref)
    except asyncpg.UndefinedTableError:  # notify was never migrated here
        return []
    texts = [[from_column(r[c] or "") for c in ("address", "subject", "body")] for r in rows]
    opening = await keys_for(keys, conn, [t for three in texts for t in three])
    notices: list[dict[str, Any]] = []
    for row, (address, subject, body) in zip(rows, texts, strict=True):
        theirs = row["recipient"] == "customer"
        notices.append(
            {
                "number": row["number"],
                "recipient": row["recipient"],
                "channel": row["channel"],
                "address": opening.open_text(address) if theirs else None,
                "template": row["template"],
                "language": row["language"],
                "subject": opening.open_text(subject),
                "body": opening.open_text(body),
                "status": row["status"],
                "attempts": row["attempts"],
                "created_at": row["created_at"].isoformat(),
                "finished_at": row["finished_at"] and row["finished_at"].isoformat(),
            }
        )
    return notices

"""An erased customer's data leaves the console's read models (services/console/personal.py),
on a real PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.console.personal import forget
from shared.database import Connection

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


async def _ticket_with_messages(conn: Connection, number: str, ref: str) -> None:
    customer = json.dumps({"name": {"ref": ref, "ct": "x"}, "ref": ref})
    await conn.execute(
        "INSERT INTO tickets (ticket_id, number, status, priority, received_at, updated_at, "
        "customer) VALUES (gen_random_uuid(), $1, 'in_progress', 'normal', $2, $2, $3)",
        number,
        NOW,
        customer,
    )
    for n, template in enumerate(("acknowledgement", "agent_reply")):
        sealed = json.dumps({"ref": ref, "ct": f"ct-{n}"})
        await conn.execute(
            "INSERT INTO channel_messages (notice_key, conversation, number, template, language, "
            "subject, text, sent_at) VALUES ($1, $2, $3, $4, 'en', $5, $5, $6)",
            f"{number}-{template}",
            f"conversation-{number}",
            number,
            template,
            sealed,
            NOW,
        )


@pytest.mark.asyncio
async def test_an_erased_customers_channel_messages_are_deleted_and_no_one_elses(
    console: Connection,
) -> None:
    await _ticket_with_messages(console, "REQ-2026-000001", "cust-erased")
    await _ticket_with_messages(console, "REQ-2026-000002", "cust-kept")

    await forget(console, ["cust-erased"])

    left = await console.fetch("SELECT number FROM channel_messages ORDER BY notice_key")
    assert [r["number"] for r in left] == ["REQ-2026-000002"] * 2
    erased = await console.fetchval("SELECT subject FROM tickets WHERE number = 'REQ-2026-000001'")
    assert erased == "erased"

"""A ticket and its follow-ups name each other in the console: from the events, and for tickets
recorded before the console kept the link, from their timelines (``sql/006_follow_ups.sql``)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from shared.settings import Settings
from tests.console.support import SIMPLE, desk
from tests.support.migrations import schema_before
from tests.support.waiting import eventually


async def _detail(client: Any, number: str) -> dict[str, Any]:
    shown: dict[str, Any] = (await client.get(f"/api/tickets/{number}")).json()
    return shown


@pytest.mark.asyncio
async def test_a_ticket_and_its_follow_up_name_each_other_and_the_follow_up_goes_to_its_agent(
    settings: Settings,
) -> None:
    """A customer writes on a closed ticket: the agents' screens show the new ticket as the
    old one's follow-up, and the old one's agent has it."""
    async with desk(settings) as world:
        await world.request(0, **SIMPLE)
        [ticket] = await world.tickets("ops", 1, status="assigned")
        number, owner = ticket["number"], ticket["agent_id"]
        agent = world.client(owner)
        for body in (
            {"type": "accept"},
            {"type": "resolve", "resolution": "Reset"},
            {"type": "close"},
        ):
            sent = await agent.post(f"/api/tickets/{number}/commands", json=body)
            assert (await world.decided(agent, sent.json()["command_id"]))["status"] == "accepted"
        await world.request(
            1, **{**SIMPLE, "description": "Still locked out"}, reply_to_ticket=number
        )
        ops = world.client("ops")
        old = await eventually(
            lambda: _detail(ops, number), lambda d: bool(d["follow_ups"]), what="follow-up"
        )
        [follow_up] = old["follow_ups"]
        new = await eventually(
            lambda: _detail(ops, follow_up), lambda d: d["status"] == "assigned", what="routed"
        )
    assert old["follows_up"] is None
    assert (new["follows_up"], new["follow_ups"]) == (number, [])
    assert new["agent_id"] == owner
    assert new["description"] == "Still locked out"


@pytest.mark.asyncio
async def test_links_made_before_the_console_kept_them_are_carried_over(
    settings: Settings,
) -> None:
    async with schema_before(settings, "console", 6) as (conn, finish):
        old, first, second, alone = (str(uuid4()) for _ in range(4))
        numbers = {old: "REQ-1", first: "REQ-2", second: "REQ-3", alone: "REQ-4"}
        timelines: dict[str, list[tuple[str, dict[str, Any]]]] = {
            old: [
                ("ticket.received", {}),
                ("ticket.follow_up_opened", {"follow_up_number": "REQ-2"}),
                ("ticket.follow_up_opened", {"follow_up_number": "REQ-3"}),
            ],
            first: [("ticket.received", {"follows_up": "REQ-1"})],
            second: [("ticket.received", {"follows_up": "REQ-1"})],
            alone: [("ticket.received", {"follows_up": None})],
        }
        for n, (ticket_id, entries) in enumerate(timelines.items()):
            await conn.execute(
                "INSERT INTO tickets (ticket_id, number, status, priority, received_at, "
                "updated_at) VALUES ($1, $2, 'in_progress', 'normal', now(), now())",
                ticket_id,
                numbers[ticket_id],
            )
            for position, (kind, facts) in enumerate(entries, start=10 * n):
                await conn.execute(
                    "INSERT INTO timeline (ticket_id, position, at, service, kind, facts) "
                    "VALUES ($1, $2, now(), 'intake', $3, $4)",
                    ticket_id,
                    position,
                    kind,
                    facts,
                )
        await finish()
        rows = await conn.fetch("SELECT number, follows_up, follow_ups FROM tickets")
    assert {r["number"]: (r["follows_up"], r["follow_ups"]) for r in rows} == {
        "REQ-1": (None, ["REQ-2", "REQ-3"]),
        "REQ-2": ("REQ-1", []),
        "REQ-3": ("REQ-1", []),
        "REQ-4": (None, []),
    }

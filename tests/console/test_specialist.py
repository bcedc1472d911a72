"""The exceptions path's internal hand-off from an agent desk: a group asked for findings
(``request_specialist``) sees the ticket in the console — its detail, the list, the live stream —
and answers it (``provide_findings``) through the console's command path, until it has answered.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import httpx
import pytest

from shared.settings import Settings
from tests.console.support import SIMPLE, Desk, desk, sse_events
from tests.support.migrations import schema_before
from tests.support.waiting import eventually

QUESTION = "Is the VPN gateway of the third floor down?"
FINDINGS = "The gateway was restarted at 9:40; the VPN works again."


@pytest.mark.asyncio
async def test_a_group_asked_for_findings_sees_the_ticket_and_answers_it_until_it_has(
    settings: Settings,
) -> None:
    async with desk(settings) as world:
        await world.request(0, **SIMPLE)
        [ticket] = await world.tickets("ops", 1, status="assigned")
        number, owner = ticket["number"], world.client(ticket["agent_id"])
        network, printing = world.client("wu.hao"), world.client("zhou.min")
        answer = {"type": "provide_findings", "findings": FINDINGS}

        # Before anyone asks: the front line's ticket is not the network group's to see.
        assert (await network.get(f"/api/tickets/{number}")).status_code == 403
        assert (await network.post(f"/api/tickets/{number}/commands", json=answer)).status_code == (
            403
        )
        await _command(world, owner, number, {"type": "accept"})

        # The owner asks the network group; wu.hao's desk, open meanwhile, is told at once.
        def asked(events: list[tuple[str, dict[str, Any], float]]) -> bool:
            return any(kind == "ticket" and data["number"] == number for kind, data, _ in events)

        def left(events: list[tuple[str, dict[str, Any], float]]) -> bool:
            return any(kind == "ticket_left" for kind, _, _ in events)

        reading = asyncio.ensure_future(sse_events(network, asked))
        staying = asyncio.ensure_future(sse_events(network, left, timeout=60))  # to the end
        await eventually(
            lambda: _watching(world.console, "wu.hao"), lambda n: n == 2, what="wu.hao's streams"
        )
        ask = {"type": "request_specialist", "to_group": "network", "question": QUESTION}
        await _command(world, owner, number, ask)
        streamed = [data for kind, data, _ in await reading if kind == "ticket"]
        assert [data["number"] for data in streamed] == [number]  # the accept was not theirs

        # wu.hao sees it: in the list, and its detail with the question.
        listed = await world.tickets("wu.hao", 1)
        assert [t["number"] for t in listed] == [number]
        shown = await network.get(f"/api/tickets/{number}")
        assert shown.status_code == 200, shown.text
        request = next(e for e in shown.json()["timeline"] if e["kind"] == _REQUESTED)
        assert (request["said"], request["facts"]["to_group"]) == (QUESTION, "network")
        # Its figures stay the network group's: the ticket is not its queue's.
        queues = (await network.get("/api/queues")).json()
        assert "front-line" not in {q["group_id"] for q in queues}

        # A third group still sees nothing of it, nor may it answer.
        assert (await printing.get(f"/api/tickets/{number}")).status_code == 403
        assert number not in {
            t["number"] for t in (await printing.get("/api/tickets")).json()["items"]
        }
        assert (
            await printing.post(f"/api/tickets/{number}/commands", json=answer)
        ).status_code == 403

        # wu.hao answers from the desk; dispatch takes it. His desk, still open, is told the
        # ticket left his sight (it would otherwise keep showing it as it last was).
        await _command(world, network, number, answer)
        told = [(kind, data) for kind, data, _ in await staying if kind.startswith("ticket")]
        assert told[-1] == ("ticket_left", {"ticket_id": ticket["ticket_id"], "number": number})
        assert [kind for kind, _ in told].count("ticket_left") == 1
        assert all(data["number"] == number for _, data in told)

        # Answered: no longer theirs to see; still the owner's.
        await eventually(
            lambda: _status(network, number), lambda code: code == 403, what="no longer shown"
        )
        assert (await network.get("/api/tickets")).json()["items"] == []
        again = await network.post(f"/api/tickets/{number}/commands", json=answer)
        assert again.status_code == 403
        detail = (await owner.get(f"/api/tickets/{number}")).json()
        findings = next(e for e in detail["timeline"] if e["kind"] == "ticket.findings_provided")
        assert (findings["said"], findings["actor"]) == (FINDINGS, "wu.hao")


_REQUESTED = "ticket.specialist_requested"


@pytest.mark.asyncio
async def test_requests_made_before_the_console_knew_the_group_asked_are_carried_over(
    settings: Settings,
) -> None:
    """The migration fills the group asked from the timelines: a ticket whose last request is
    unanswered waits on it; one answered, or never asked, on nobody."""
    async with schema_before(settings, "console", 5) as (conn, finish):
        waiting, answered, asked_again, never = (str(uuid4()) for _ in range(4))
        timelines = {
            waiting: [_REQUESTED],
            answered: [_REQUESTED, "ticket.findings_provided"],
            asked_again: [_REQUESTED, "ticket.findings_provided", _REQUESTED],
            never: ["ticket.accepted"],
        }
        for n, (ticket_id, kinds) in enumerate(timelines.items()):
            await conn.execute(
                "INSERT INTO tickets (ticket_id, number, status, priority, received_at, "
                "updated_at) VALUES ($1, $2, 'in_progress', 'normal', now(), now())",
                ticket_id,
                f"REQ-2026-00000{n}",
            )
            for position, kind in enumerate(kinds, start=10 * n):
                group = "network" if position % 10 == 0 else "printing"
                facts = {"to_group": group} if kind == _REQUESTED else {"from_group": "network"}
                await conn.execute(
                    "INSERT INTO timeline (ticket_id, position, at, service, kind, facts) "
                    "VALUES ($1, $2, now(), 'dispatch', $3, $4)",
                    ticket_id,
                    position,
                    kind,
                    facts,
                )
        await finish()
        rows = await conn.fetch("SELECT ticket_id::text, specialist_group FROM tickets")
    assert {r["ticket_id"]: r["specialist_group"] for r in rows} == {
        waiting: "network",
        answered: None,
        asked_again: "printing",
        never: None,
    }


async def _command(world: Desk, client: httpx.AsyncClient, number: str, body: Any) -> None:
    """Send a command through the console and wait until dispatch accepts it."""
    sent = await client.post(f"/api/tickets/{number}/commands", json=body)
    assert sent.status_code == 202, sent.text
    decided = await world.decided(client, sent.json()["command_id"])
    assert decided["status"] == "accepted", decided


async def _status(client: httpx.AsyncClient, number: str) -> int:
    return (await client.get(f"/api/tickets/{number}")).status_code


async def _watching(console: object, subject: str) -> int:
    """How many streams ``subject`` has open."""
    watchers = console.http.state.console.stream.watchers  # type: ignore[attr-defined]
    return sum(1 for w in watchers if w.viewer.subject == subject)

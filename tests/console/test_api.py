"""The console's API against running services: intake and dispatch record and route real
requests, the console reads their events and answers agent desks over HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services import build_service
from services.console.journal import Journal
from services.console.settings import ConsoleSettings
from services.console.storage import read_models
from shared.keystore import KeyStore, MasterKey
from shared.projection import rebuild
from shared.settings import Settings
from tests.conftest import SettingsFactory
from tests.console.support import PRINTER, SIMPLE, Desk, desk, served, sse_events
from tests.support.asgi import get_scope, no_body
from tests.support.credentials import token
from tests.support.waiting import eventually

TABLES = ("tickets", "timeline", "clocks", "agents", "traffic", "decisions")


@pytest.mark.asyncio
async def test_tickets_queues_and_agents_each_as_the_callers_role_may_see_them(
    settings: Settings,
) -> None:
    async with desk(settings) as world:
        for n in range(3):
            await world.request(n, **SIMPLE)
        for n in range(3, 5):
            await world.request(n, **PRINTER)
        await world.request(5, **SIMPLE, customer={"name": "李雷", "email": "LI.LEI@example.com"})
        everything = await world.tickets("ops", 6, status=["assigned", "queued"])
        operator = world.client("ops")

        # An operator sees all; an agent their group's and their own; a supervisor their groups.
        groups = {t["number"]: t["group_id"] for t in everything}
        assert sorted(set(groups.values())) == ["front-line", "printing"]
        li_na = {
            t["number"] for t in (await world.client("li.na").get("/api/tickets")).json()["items"]
        }
        assert li_na == {n for n, g in groups.items() if g == "front-line"}
        zhao = world.client("zhao.lei")  # supervises front-line and customer-care
        assert {t["group_id"] for t in (await zhao.get("/api/tickets")).json()["items"]} == {
            "front-line"
        }
        me = (await zhao.get("/api/me")).json()
        assert me["role"] == "supervisor" and "front-line" in me["groups"]
        assert (await operator.get("/api/me")).json()["groups"] is None

        # Filters: status, group, agent, customer (the customer's history), text, paging.
        printing = (await operator.get("/api/tickets", params={"group": "printing"})).json()
        assert len(printing["items"]) == 2
        first = printing["items"][0]
        by_agent = await operator.get("/api/tickets", params={"agent": first["agent_id"]})
        assert first["number"] in {t["number"] for t in by_agent.json()["items"]}
        history = await operator.get("/api/tickets", params={"customer": "li.lei@example.com"})
        assert [t["customer_name"] for t in history.json()["items"]] == ["李雷"]
        found = await operator.get("/api/tickets", params={"q": "重置密码"})
        assert len(found.json()["items"]) == 4
        assigned = await operator.get(
            "/api/tickets", params={"status": ["assigned", "queued"], "complexity": "simple"}
        )
        assert len(assigned.json()["items"]) == 4
        seen: list[str] = []
        page = (await operator.get("/api/tickets", params={"limit": 4})).json()
        seen += [t["number"] for t in page["items"]]
        page = (
            await operator.get("/api/tickets", params={"limit": 4, "after": page["next"]})
        ).json()
        seen += [t["number"] for t in page["items"]]
        assert page["next"] is None and seen == [t["number"] for t in everything]
        assert (await operator.get("/api/tickets", params={"sla": "breached"})).json()[
            "items"
        ] == []

        # One ticket, its customer and its whole timeline.
        number = first["number"]
        detail = (await operator.get(f"/api/tickets/{number}")).json()
        assert detail["customer"]["email"] == "wang.fang@example.com"
        assert detail["description"] == "三楼的打印机一直卡纸，无法打印。"
        kinds = [e["kind"] for e in detail["timeline"]]
        assert kinds[:2] == ["ticket.received", "ticket.triaged"] or set(kinds[:2]) == {
            "ticket.received",
            "ticket.triaged",
        }
        assert "ticket.classified" in kinds and "ticket.assigned" in kinds
        assert all("customer" not in e["facts"] for e in detail["timeline"])

        # Queues and agents.
        queues = {q["group_id"]: q for q in (await operator.get("/api/queues")).json()}
        assert queues["printing"]["open"] == 2 and queues["front-line"]["open"] == 4
        agents = {a["agent_id"]: a for a in (await operator.get("/api/agents")).json()}
        assert sum(a["load"] for a in agents.values()) == 6 and "sun.yu" in agents
        li_agents = {a["agent_id"] for a in (await world.client("li.na").get("/api/agents")).json()}
        assert li_agents == {"li.na", "wang.qiang", "emma.jones"}
        figures = (await operator.get("/api/dashboard")).json()
        assert sum(g["total"] for g in figures["open_tickets"]) == 6
        assert figures["csat"]["target"] == 0.9 and figures["reviews"] is not None
        assert (await world.client("li.na").get("/api/dashboard")).json()["reviews"] is None

        # Each error code, as JSON with a code and no stack trace.
        anonymous = world.client()
        expired = world.client("ops", now=datetime.now(UTC) - timedelta(hours=2))
        cases = {
            "no token": (await anonymous.get("/api/tickets"), 401, "unauthenticated"),
            "forged token": (
                await anonymous.get("/api/tickets", headers={"Authorization": "Bearer a.b.c"}),
                401,
                "unauthenticated",
            ),
            "expired token": (await expired.get("/api/tickets"), 401, "unauthenticated"),
            "a customer's token": (
                await world.client("customer", ticket=number).get("/api/tickets"),
                403,
                "forbidden",
            ),
            "nobody of the directory": (
                await world.client("mallory").get("/api/tickets"),
                403,
                "forbidden",
            ),
            "another group's ticket": (
                await world.client("li.na").get(f"/api/tickets/{number}"),
                403,
                "forbidden",
            ),
            "an unknown ticket": (
                await operator.get("/api/tickets/REQ-2026-999999"),
                404,
                "not_found",
            ),
            "a cursor we did not make": (
                await operator.get("/api/tickets", params={"after": "!!"}),
                400,
                "invalid_cursor",
            ),
            **{
                f"a cursor of {what}": (
                    await operator.get("/api/tickets", params={"after": _cursor_of(raw)}),
                    400,
                    "invalid_cursor",
                )
                for what, raw in {
                    "the calendar's end": "9999-12-31T23:59:59-14:00|REQ-2026-000001",
                    "no time zone": "2026-12-01T15:24:24|REQ-2026-000001",
                    "a NUL in its number": "2026-12-01T15:24:24+00:00|REQ\x00",
                }.items()
            },
            "an unknown status": (
                await operator.get("/api/tickets", params={"status": "lost"}),
                422,
                "invalid_request",
            ),
            "an unknown complexity": (
                await operator.get("/api/tickets", params={"complexity": "bogus"}),
                422,
                "invalid_request",
            ),
            "a status named 1,500 times": (
                await operator.get("/api/tickets", params={"status": ["assigned"] * 1500}),
                422,
                "invalid_request",
            ),
            "61 groups": (
                await operator.get("/api/tickets", params={"group": [f"g{n}" for n in range(61)]}),
                422,
                "invalid_request",
            ),
            "a group of 10,000 characters": (
                await operator.get("/api/tickets", params={"group": "g" * 10_000}),
                422,
                "invalid_request",
            ),
            "an unknown route": (await operator.get("/api/nothing"), 404, "not_found"),
        }
        for case, (response, status, code) in cases.items():
            assert (response.status_code, response.json()["code"]) == (status, code), case
            assert "Traceback" not in response.text, case
        assert cases["no token"][0].headers["www-authenticate"] == "Bearer"

        # The OpenAPI document is served, and the committed one is it.
        served = (await anonymous.get("/api/openapi.json")).json()
        assert "/api/tickets/{number}/commands" in served["paths"]

        # The read models hold nothing the journal does not: rebuilt, they are the same.
        async with world.console.pool.acquire() as conn:
            before = {t: await _rows(conn, t) for t in TABLES}
            for projection in read_models(
                KeyStore(MasterKey.from_settings(world.console.settings))
            ):
                await rebuild(conn, Journal("console"), projection)
            assert {t: await _rows(conn, t) for t in TABLES} == before


def _cursor_of(raw: str) -> str:
    """A cursor made by hand, shaped as the list makes them (base64url of ``time|number``)."""
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


async def _rows(conn: object, table: str) -> list[str]:
    rows = await conn.fetch(f"SELECT * FROM {table}")  # type: ignore[attr-defined]
    return sorted(json.dumps(dict(r), default=str, sort_keys=True) for r in rows)


@pytest.mark.asyncio
async def test_commands_go_to_dispatch_in_the_callers_name_and_their_decisions_come_back(
    settings: Settings,
) -> None:
    async with desk(settings) as world:
        await world.request(0, **SIMPLE)
        [ticket] = await world.tickets("ops", 1, status="assigned")
        number, assignee = ticket["number"], ticket["agent_id"]
        agent = world.client(assignee)
        other = next(a for a in ("li.na", "wang.qiang", "emma.jones") if a != assignee)

        # Too early: refused (the ticket is not accepted yet); the same id is kept for later.
        early = {"type": "start_work", "command_id": "early-start"}
        sent = await agent.post(f"/api/tickets/{number}/commands", json=early)
        assert sent.status_code == 202, sent.text
        refused = await world.decided(agent, "early-start")
        assert (refused["status"], refused["reason"]) == ("refused", "illegal_transition")

        # Accepted: the ticket changes, and the command says so.
        sent = await agent.post(f"/api/tickets/{number}/commands", json={"type": "accept"})
        assert sent.status_code == 202, sent.text
        command_id = sent.json()["command_id"]
        assert sent.headers["location"] == f"/api/commands/{command_id}"
        assert (await world.decided(agent, command_id))["status"] == "accepted"
        shown = (await agent.get(f"/api/tickets/{number}")).json()
        assert shown["status"] == "accepted"
        accepted = next(e for e in shown["timeline"] if e["kind"] == "ticket.accepted")
        assert accepted["actor"] == assignee  # the caller's own identity, proven to dispatch

        # Refused, with dispatch's reason: another agent of the group is not the assignee.
        sent = await world.client(other).post(
            f"/api/tickets/{number}/commands", json={"type": "resolve", "resolution": "done"}
        )
        assert sent.status_code == 202
        refused = await world.decided(world.client(other), sent.json()["command_id"])
        assert (refused["status"], refused["reason"]) == ("refused", "not_permitted")
        assert (await agent.get(f"/api/tickets/{number}")).json()["status"] == "accepted"

        # The same command id again from the same caller is the same command.
        again = await agent.post(
            f"/api/tickets/{number}/commands", json={"type": "accept", "command_id": command_id}
        )
        assert (again.status_code, again.json()["command_id"]) == (202, command_id)
        # ... with another command under it: refused, nothing sent.
        other_body = {"type": "add_note", "note": "hello", "command_id": command_id}
        reused = await agent.post(f"/api/tickets/{number}/commands", json=other_body)
        assert (reused.status_code, reused.json()["code"]) == (422, "command_id_reused")
        # A refused one sent again is evaluated anew: now that the ticket is accepted, applied.
        again = await agent.post(f"/api/tickets/{number}/commands", json=early)
        assert again.status_code == 202, again.text
        assert (await world.decided(agent, "early-start"))["status"] == "accepted"
        assert (await agent.get(f"/api/tickets/{number}")).json()["status"] == "in_progress"

        # Agent commands: the agent's own shift.
        off = await agent.post(f"/api/agents/{assignee}/commands", json={"type": "go_off_shift"})
        assert off.status_code == 202
        assert (await world.decided(agent, off.json()["command_id"]))["status"] == "accepted"
        roster = {a["agent_id"]: a for a in (await agent.get("/api/agents")).json()}
        assert roster[assignee]["on_shift"] is False

        # Hostile and mistaken input: each answered with its code, nothing sent.
        cookie_only = world.client()
        cookie_only.cookies.set("desk_token", agent.headers["authorization"][7:])
        huge = {"type": "respond", "message": "x" * 70_000}
        cases = {
            "garbage JSON": (
                await agent.post(
                    f"/api/tickets/{number}/commands",
                    content=b'{"type": "accept",',
                    headers={"content-type": "application/json"},
                ),
                400,
                "invalid_json",
            ),
            "JSON nested 10,000 deep": (
                await agent.post(
                    f"/api/tickets/{number}/commands",
                    content=b"[" * 10_000 + b"]" * 10_000,
                    headers={"content-type": "application/json"},
                ),
                400,
                "invalid_json",
            ),
            "not UTF-8": (
                await agent.post(
                    f"/api/tickets/{number}/commands",
                    content=b'{"type": "accept", "x": "\xff\xfe"}',
                    headers={"content-type": "application/json"},
                ),
                400,
                "invalid_json",
            ),
            "a number of 5,000 digits": (
                await agent.post(
                    f"/api/tickets/{number}/commands",
                    content=b'{"type": "accept", "x": ' + b"9" * 5000 + b"}",
                    headers={"content-type": "application/json"},
                ),
                400,
                "invalid_json",
            ),
            "not an object": (
                await agent.post(f"/api/tickets/{number}/commands", json=["accept"]),
                422,
                "invalid_request",
            ),
            "an unknown command": (
                await agent.post(f"/api/tickets/{number}/commands", json={"type": "delete"}),
                422,
                "invalid_command",
            ),
            "another ticket in the body": (
                await agent.post(
                    f"/api/tickets/{number}/commands",
                    json={"type": "accept", "ticket_number": "REQ-2026-000999"},
                ),
                422,
                "invalid_command",
            ),
            "another actor in the body": (
                await agent.post(
                    f"/api/tickets/{number}/commands", json={"type": "accept", "actor": "sun.yu"}
                ),
                422,
                "invalid_command",
            ),
            "a body too large": (
                await agent.post(f"/api/tickets/{number}/commands", json=huge),
                413,
                "body_too_large",
            ),
            "a cookie and no header": (
                await cookie_only.post(f"/api/tickets/{number}/commands", json={"type": "accept"}),
                401,
                "unauthenticated",
            ),
            "a ticket of another group": (
                await world.client("zhou.min").post(
                    f"/api/tickets/{number}/commands", json={"type": "accept"}
                ),
                403,
                "forbidden",
            ),
            "an agent of another group": (
                await agent.post("/api/agents/zhou.min/commands", json={"type": "go_off_shift"}),
                403,
                "forbidden",
            ),
            "someone else's command id": (
                await world.client(other).post(
                    f"/api/tickets/{number}/commands",
                    json={"type": "accept", "command_id": command_id},
                ),
                409,
                "command_id_taken",
            ),
            "someone else's command, answered as an unknown one": (
                await world.client(other).get(f"/api/commands/{command_id}"),
                404,
                "not_found",
            ),
            "an unknown command id": (
                await agent.get("/api/commands/no-such-command"),
                404,
                "not_found",
            ),
        }
        for case, (response, status, code) in cases.items():
            assert (response.status_code, response.json()["code"]) == (status, code), case
        assert (await agent.get(f"/api/tickets/{number}")).json()["status"] == "in_progress"

        # Reclassify, like every ticket command: triage was wrong, the read model follows.
        sent = await agent.post(
            f"/api/tickets/{number}/commands",
            json={"type": "reclassify", "complexity": "complex", "reason": "a whole office"},
        )
        assert sent.status_code == 202, sent.text
        assert (await world.decided(agent, sent.json()["command_id"]))["status"] == "accepted"
        ops = world.client("ops")
        detail = await eventually(
            lambda: _detail(ops, number),
            lambda d: d["complexity"] == "complex",
            what="the reclassification in the read model",
        )
        assert (detail["category"], detail["complaint"]) == ("problem", False)
        corrected = next(e for e in detail["timeline"] if e["kind"] == "ticket.reclassified")
        assert corrected["actor"] == assignee
        assert corrected["facts"]["from_complexity"] == "simple"
        moved = corrected["facts"]["to_group"]
        await eventually(lambda: _detail(ops, number), lambda d: d["group_id"] == moved)
        listed = await world.tickets("ops", 1, complexity="complex")
        assert [t["number"] for t in listed] == [number]


@pytest.mark.asyncio
async def test_a_refusal_of_another_record_under_the_same_command_id_is_not_shown_as_ours(
    settings: Settings,
) -> None:
    """Anyone able to write tickets.commands can send an unsigned record under a command id
    they expect someone to use. dispatch refuses it (unauthenticated, nobody's), and the
    console showed that refusal as the real sender's, which stood even once dispatch refused
    the real command for its own reason. Now a refusal counts only if it names what the sender
    sent (type, target, and actor when it names one)."""
    async with desk(settings) as world:
        await world.request(0, **SIMPLE)
        [ticket] = await world.tickets("ops", 1, status="assigned")
        number, agent = ticket["number"], world.client(ticket["agent_id"])
        forged = {
            "type": "start_work",
            "command_id": "early-start",
            "ticket_number": "REQ-2026-999999",
            "actor": ticket["agent_id"],
            "issued_at": datetime.now(UTC).isoformat(),
        }
        # First on the ticket's partition: dispatch refuses it before the real one.
        await world.kafka.publish("tickets.commands", json.dumps(forged).encode(), key=number)
        real = {"type": "start_work", "command_id": "early-start"}
        sent = await agent.post(f"/api/tickets/{number}/commands", json=real)
        assert sent.status_code == 202, sent.text
        decided = await world.decided(agent, "early-start")
        assert (decided["status"], decided["reason"]) == ("refused", "illegal_transition")


@pytest.mark.asyncio
async def test_an_acceptance_of_another_senders_command_under_the_same_id_is_not_shown_as_ours(
    settings: Settings,
) -> None:
    """dispatch keys commands by sender and id, so two people may use one id. Another agent's
    accepted command on their own ticket, under our pending id, showed ours as accepted while
    dispatch refused ours. Now an acceptance counts only on the command's target's stream."""
    async with desk(settings) as world:
        await world.request(0, **SIMPLE)
        await world.request(1, **PRINTER)
        tickets = {t["group_id"]: t for t in await world.tickets("ops", 2, status="assigned")}
        ours, theirs = tickets["front-line"], tickets["printing"]
        agent = world.client(ours["agent_id"])
        # Refused: an assigned ticket is accepted before work starts on it.
        mine = {"type": "start_work", "command_id": "shared-id"}
        sent = await agent.post(f"/api/tickets/{ours['number']}/commands", json=mine)
        assert sent.status_code == 202, sent.text
        await world.kafka.ticket_command(
            theirs["agent_id"], theirs["number"], "accept", command_id="shared-id"
        )
        await world.tickets("ops", 1, status="accepted", agent=theirs["agent_id"])
        decided = await world.decided(agent, "shared-id")
        await asyncio.sleep(0.5)  # whatever else the console reads of it is read by now
        again = (await agent.get("/api/commands/shared-id")).json()
    assert (decided["status"], decided["reason"]) == ("refused", "illegal_transition")
    assert (again["status"], again["reason"]) == ("refused", "illegal_transition")


@pytest.mark.asyncio
async def test_a_command_id_of_the_senders_own_choosing_is_polled_where_the_location_says(
    settings: Settings,
) -> None:
    """A sender chooses its command ids; one holding "/", "?" or "../" made a Location that
    pointed elsewhere (``/api/commands/../../etc``) and a status nobody could poll."""
    chosen = "desk 7/../../etc?x=1#top"
    async with desk(settings) as world:
        await world.request(0, **SIMPLE)
        (ticket,) = await world.tickets("ops", 1, status="assigned")
        agent = world.client(ticket["agent_id"])
        sent = await agent.post(
            f"/api/tickets/{ticket['number']}/commands",
            json={"type": "accept", "command_id": chosen},
        )
        assert sent.status_code == 202, sent.text
        location = sent.headers["location"]
        assert location == sent.json()["location"]
        assert (
            location.startswith("/api/commands/") and "/" not in location[len("/api/commands/") :]
        )
        await world.tickets("ops", 1, status="accepted")
        polled = await agent.get(location)
    assert polled.status_code == 200, polled.text
    assert (polled.json()["command_id"], polled.json()["status"]) == (chosen, "accepted")


async def _detail(client: Any, number: str) -> dict[str, Any]:
    shown: dict[str, Any] = (await client.get(f"/api/tickets/{number}")).json()
    return shown


@pytest.mark.asyncio
async def test_the_stream_delivers_a_visible_change_within_a_second(settings: Settings) -> None:
    async with desk(settings) as world:
        await world.request(0, **SIMPLE)
        await world.request(1, **PRINTER)
        tickets = {t["group_id"]: t for t in await world.tickets("ops", 2, status="assigned")}
        front, printing = tickets["front-line"], tickets["printing"]
        watcher = world.client("zhao.lei")  # supervises the front line, not printing

        def accepted(events: list[tuple[str, dict[str, Any], float]]) -> bool:
            return any(
                kind == "ticket" and data["status"] == "accepted" for kind, data, _ in events
            )

        reading = asyncio.ensure_future(sse_events(watcher, accepted))
        await eventually(lambda: _watching(world.console), what="the stream has its watcher")
        for ticket in (printing, front):
            agent = world.client(ticket["agent_id"])
            sent = await agent.post(
                f"/api/tickets/{ticket['number']}/commands", json={"type": "accept"}
            )
            assert sent.status_code == 202
        events = await reading
    changes = [(data, at) for kind, data, at in events if kind == "ticket"]
    assert {data["number"] for data, _ in changes} == {front["number"]}  # printing: not theirs
    data, arrived = next((d, a) for d, a in changes if d["status"] == "accepted")
    changed = datetime.fromisoformat(data["updated_at"]).timestamp()
    assert arrived - changed < 1.0, f"{arrived - changed:.3f} s from dispatch's event"


async def _watching(console: object) -> bool:
    return bool(console.http.state.console.stream.watchers)  # type: ignore[attr-defined]


async def _anns_request(world: Desk) -> tuple[str, httpx.AsyncClient, httpx.AsyncClient, str]:
    """An English-speaking customer's assigned request: its number, its agent's client, a
    client without a token (the survey link's browser), and the customer's token."""
    await world.request(
        0, **SIMPLE, customer={"name": "Ann", "email": "ann@example.com", "language": "en"}
    )
    [ticket] = await world.tickets("ops", 1, status="assigned")
    number = ticket["number"]
    customer = world.client("customer", ticket=number).headers["authorization"][7:]
    return number, world.client(ticket["agent_id"]), world.client(), customer


@pytest.mark.asyncio
async def test_the_survey_records_satisfaction_once_through_the_customers_signed_command(
    settings: Settings,
) -> None:
    async with desk(settings) as world:
        number, agent, link, customer = await _anns_request(world)
        early = await link.post(f"/survey/{number}", data={"token": customer, "score": "4"})
        assert 'data-state="not_yet"' in early.text  # not dispatch's reason code
        for body in ({"type": "accept"}, {"type": "resolve", "resolution": "Reset it for you"}):
            sent = await agent.post(f"/api/tickets/{number}/commands", json=body)
            assert (await world.decided(agent, sent.json()["command_id"]))["status"] == "accepted"
        page = await link.get(f"/survey/{number}", params={"token": customer})
        assert page.status_code == 200 and 'name="score"' in page.text
        assert "How did we do?" in page.text  # the customer's language
        wrong = await link.get("/survey/REQ-2026-000999", params={"token": customer})
        assert wrong.status_code == 403
        # Whatever the form holds, the customer gets the page back, never a JSON error.
        odd_forms = [
            ({"token": customer, "score": score}, 422, "from 1 to 5")
            for score in ("abc", "3.5", "1e1", "", "6")
        ]
        odd_forms += [
            ({"token": customer, "score": "4", "comment": "x" * 4001}, 422, "too long"),
            ({"score": "4"}, 403, "not valid"),
            ({"token": "t" * 5000, "score": "4"}, 403, "not valid"),
        ]
        for form, status, shown in odd_forms:
            answer = await link.post(f"/survey/{number}", data=form)
            assert answer.status_code == status, form
            assert answer.headers["content-type"].startswith("text/html"), form
            assert shown in answer.text, form
        # A file in place of a field (a multipart form) is not the field: the page again.
        for files, form, status in (
            ({"token": ("t.txt", customer.encode())}, {"score": "4"}, 403),
            ({"score": ("s.txt", b"4")}, {"token": customer}, 422),
        ):
            answer = await link.post(f"/survey/{number}", data=form, files=files)
            assert answer.status_code == status, files
            assert answer.headers["content-type"].startswith("text/html"), files
        # A broken multipart body: read once, as no form at all (a second read found it
        # consumed, and answered a JSON 500 with a traceback).
        broken = await link.post(
            f"/survey/{number}",
            content=b"garbage",
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        )
        assert broken.status_code == 403 and broken.headers["content-type"].startswith("text/")
        as_json = await link.post(f"/survey/{number}", json={"token": customer, "score": 4})
        assert as_json.status_code == 403 and as_json.headers["content-type"].startswith("text/")
        rated = await link.post(
            f"/survey/{number}", data={"token": customer, "score": "5", "comment": "Quick, thanks"}
        )
        assert 'data-state="thanks"' in rated.text
        again = await link.post(f"/survey/{number}", data={"token": customer, "score": "1"})
        assert 'data-state="done"' in again.text
        shown = (await world.client("ops").get(f"/api/tickets/{number}")).json()
        assert (shown["satisfaction"], shown["satisfaction_comment"]) == (5, "Quick, thanks")
        csat = (await world.client("ops").get("/api/dashboard")).json()["csat"]
        assert (csat["today"]["rated"], csat["today"]["ratio"]) == (1, 1.0)


@pytest.mark.asyncio
async def test_a_nul_in_a_path_or_query_parameter_is_refused_before_the_database(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL text cannot hold NUL: such an id names nothing (404), such a filter is 422,
    and neither reaches the database to fail there as a 500 with a traceback."""
    logged = Logged()
    monkeypatch.setattr("services.console.api.log", logged)
    async with (
        served(build_service("console", settings)) as url,
        httpx.AsyncClient(
            base_url=url, timeout=10, headers={"Authorization": f"Bearer {token(settings, 'ops')}"}
        ) as operator,
    ):
        in_path = {
            "a ticket": await operator.get("/api/tickets/REQ-2026-000247%00"),
            "a command": await operator.get("/api/commands/%00"),
            "an agent's commands": await operator.post(
                "/api/agents/%00/commands", json={"type": "go_off_shift"}
            ),
            "a ticket's commands": await operator.post(
                "/api/tickets/%00/commands", json={"type": "accept"}
            ),
        }
        in_query = {
            name: await operator.get("/api/tickets", params={name: "a\x00b"})
            for name in ("q", "customer", "group", "agent", "complexity", "after")
        }
    for case, response in in_path.items():
        assert (response.status_code, response.json()["code"]) == (404, "not_found"), case
    for name, response in in_query.items():
        answer = response.json()
        assert response.status_code == 422, (name, response.text)
        assert (answer["code"], answer["field"]) == ("nul_character", name)
    # What failed in the console or its server (a 500, a traceback); not the Kafka client's
    # chatter about the embedded broker's metadata, which comes and goes with the broker.
    failed = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and not r.name.startswith("aiokafka")
    ]
    assert (logged.errors, failed) == ([], [])


class Logged:
    """The console API's log, keeping what it logs as an error (a traceback)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def exception(self, event: str, **_: Any) -> None:
        self.errors.append(event)

    error = exception

    def warning(self, event: str, **_: Any) -> None:
        pass

    info = warning


@pytest.mark.asyncio
async def test_an_authorization_header_without_a_token_is_refused_and_never_falls_to_the_cookie(
    settings: Settings,
) -> None:
    """A blank bearer token beside a valid cookie must not pass for the cookie: commands take
    their token from the header alone, and a header that carries none is a refusal, not a
    reason to read the cookie."""
    cookie = {"Cookie": f"desk_token={token(settings, 'ops')}"}
    blank = {**cookie, "Authorization": "Bearer"}  # what "Bearer " and "Bearer   " arrive as
    command = {"type": "accept"}
    async with (
        served(build_service("console", settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        # The cookie itself is good: reads take it, commands do not; a header passes.
        assert (await client.get("/api/me", headers=cookie)).status_code == 200
        cookie_only = await client.post(
            "/api/tickets/REQ-2026-000001/commands", json=command, headers=cookie
        )
        assert cookie_only.status_code == 401
        with_header = await client.post(
            "/api/tickets/REQ-2026-000001/commands",
            json=command,
            headers={"Authorization": f"Bearer {token(settings, 'ops')}"},
        )
        assert with_header.status_code == 404  # past the door: no such ticket
        refused = {
            "a ticket command": await client.post(
                "/api/tickets/REQ-2026-000001/commands", json=command, headers=blank
            ),
            "an agent command": await client.post(
                "/api/agents/li.na/commands", json={"type": "go_off_shift"}, headers=blank
            ),
            "a read": await client.get("/api/me", headers=blank),
            "an empty header": await client.get("/api/me", headers={**cookie, "Authorization": ""}),
            "another scheme": await client.get(
                "/api/me", headers={**cookie, "Authorization": "Basic b3BzOg=="}
            ),
        }
        async with client.stream("GET", "/api/stream", headers=blank) as stream:
            refused["the stream"] = stream
    for case, response in refused.items():
        assert response.status_code == 401, case


@pytest.mark.asyncio
async def test_a_sign_in_without_a_usable_token_gets_the_sign_in_page_back(
    settings: Settings,
) -> None:
    """No token, one too long or a file in its place was a JSON 422 to a browser."""
    async with (
        served(build_service("console", settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        answers = [
            await client.post("/login", data={}),
            await client.post("/login", data={"token": "   "}),
            await client.post("/login", data={"token": "x" * 5000}),
            await client.post(
                "/login", files={"token": ("t.txt", token(settings, "ops").encode())}
            ),
            await client.post(
                "/login", content=b"\x00\xff", headers={"Content-Type": "multipart/form-data"}
            ),
        ]
    for answer in answers:
        assert answer.status_code == 401, answer.text
        assert answer.headers["content-type"].startswith("text/html")
        assert "set-cookie" not in answer.headers


@pytest.mark.asyncio
async def test_signing_in_from_another_site_is_refused(settings: Settings) -> None:
    """Login CSRF: a page elsewhere posting its author's token to /login would sign the
    visitor's browser in as the author (what they then type lands in the author's name)."""
    form = {"token": token(settings, "ops")}
    async with (
        served(build_service("console", settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        own = url.rstrip("/")

        async def sign_in(**headers: str) -> httpx.Response:
            client.cookies.clear()
            return await client.post("/login", data=form, headers=headers)

        answers = {
            "fetch metadata, cross-site": await sign_in(**{"Sec-Fetch-Site": "cross-site"}),
            "fetch metadata, same-site": await sign_in(**{"Sec-Fetch-Site": "same-site"}),
            "another origin": await sign_in(Origin="https://evil.example"),
            "an opaque origin": await sign_in(Origin="null"),
            "same origin": await sign_in(Origin=own, **{"Sec-Fetch-Site": "same-origin"}),
            "its own origin, no fetch metadata": await sign_in(Origin=own),
            "no browser headers": await sign_in(),
        }
        logout = await client.post("/logout", headers={"Origin": "https://evil.example"})
    statuses = {case: r.status_code for case, r in answers.items()}
    assert statuses == {
        "fetch metadata, cross-site": 403,
        "fetch metadata, same-site": 403,
        "another origin": 403,
        "an opaque origin": 403,
        "same origin": 303,
        "its own origin, no fetch metadata": 303,
        "no browser headers": 303,
    }
    assert all("set-cookie" not in r.headers for r in answers.values() if r.status_code == 403)
    assert logout.status_code == 403


@pytest.mark.asyncio
async def test_the_sign_in_cookie_is_secure_unless_the_console_runs_in_local_mode(
    settings: Settings,
) -> None:
    """The cookie was Secure only when the console saw https, which it never does behind the
    TLS proxy of its deployment: browsers then sent the token over plain HTTP too. Now it is
    Secure unless the console runs in local mode (`desk up` serves http://127.0.0.1)."""
    assert ConsoleSettings.of(settings.replace(local_mode=False)).secure_cookie
    assert not ConsoleSettings.of(settings).secure_cookie  # the tests run in local mode
    for production in (True, False):
        own = settings.replace(console_secure_cookie=True) if production else settings
        async with (
            served(build_service("console", own)) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):
            signed_in = await client.post("/login", data={"token": token(settings, "ops")})
            signed_out = await client.post("/logout")
        for answer in (signed_in, signed_out):
            assert answer.status_code == 303
            attributes = {a.strip().lower() for a in answer.headers["set-cookie"].split(";")}
            assert {"httponly", "samesite=strict"} <= attributes
            assert ("secure" in attributes) is production, answer.headers["set-cookie"]


@pytest.mark.asyncio
async def test_commands_and_the_survey_read_nothing_of_the_tickets_timeline(
    make_settings: SettingsFactory,
) -> None:
    """Each command and each survey page loaded the ticket's whole detail — every clock and
    timeline row in one JSON value — only to read where it is, its language, subject and score:
    a customer's thousands of replies made each of them build it all. Now they read a few
    columns: with the timeline and clocks locked against every reader, both are answered."""
    settings = make_settings(db_pool_max_size=10)
    async with desk(settings) as world:
        customer = {"name": "Ann", "email": "ann@example.com", "language": "en"}
        await world.request(0, **SIMPLE, customer=customer)
        [ticket] = await world.tickets("ops", 1, status="assigned")
        number, agent = ticket["number"], world.client(ticket["agent_id"])
        link = world.client()
        survey = world.client("customer", ticket=number).headers["authorization"][7:]
        async with world.console.pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE timeline, clocks IN ACCESS EXCLUSIVE MODE")
            sent = await agent.post(
                f"/api/tickets/{number}/commands", json={"type": "add_note", "note": "Called"}
            )
            elsewhere = await world.client("zhou.min").post(
                f"/api/tickets/{number}/commands", json={"type": "add_note", "note": "Me?"}
            )
            page = await link.get(f"/survey/{number}", params={"token": survey})
            rated = await link.post(f"/survey/{number}", data={"token": survey, "score": "4"})
            detail = asyncio.create_task(world.client("ops").get(f"/api/tickets/{number}"))
            await asyncio.sleep(1.0)
            assert not detail.done(), "the detail reads the timeline: the lock holds"
        assert sent.status_code == 202, sent.text
        assert elsewhere.status_code == 403  # the printing group does not see the front line's
        assert page.status_code == 200 and "How did we do?" in page.text
        assert ticket["subject"] in page.text
        assert rated.status_code == 200
        assert re.search(r'data-state="(not_yet|pending)"', rated.text), rated.text
        assert (await detail).status_code == 200


@pytest.mark.asyncio
async def test_a_tickets_detail_holds_its_newest_timeline_entries_and_says_how_many_are_left_out(
    make_settings: SettingsFactory,
) -> None:
    """A customer's thousands of replies grew the detail without bound: every opening of the
    ticket built and sent them all. It holds the newest 500 now, and the count of the rest."""
    settings = make_settings()
    async with desk(settings) as world:
        await world.request(0, **SIMPLE)
        [ticket] = await world.tickets("ops", 1, status="assigned")
        number = ticket["number"]
        before = await _detail(world.client("ops"), number)
        async with world.console.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO timeline (ticket_id, position, at, service, kind, facts, said) "
                "SELECT $1::uuid, 1000000 + n, now() + n * interval '1 ms', 'intake', "
                "'ticket.customer_replied', '{}', 'reply ' || n FROM generate_series(1, 600) n",
                ticket["ticket_id"],
            )
        after = await _detail(world.client("ops"), number)
        # Forty replies of 32 KiB: what the detail holds is bounded in bytes too.
        async with world.console.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO timeline (ticket_id, position, at, service, kind, facts, said) "
                "SELECT $1::uuid, 2000000 + n, now() + interval '1 s' + n * interval '1 ms', "
                "'intake', 'ticket.customer_replied', '{}', n || repeat('x', 32768) "
                "FROM generate_series(1, 40) n",
                ticket["ticket_id"],
            )
        large = await _detail(world.client("ops"), number)
    assert before["timeline_omitted"] == 0 and len(before["timeline"]) < 500
    said = [e["said"] for e in after["timeline"]]
    assert len(said) == 500 and said[-1] == "reply 600" and said[0] == "reply 101"
    assert after["timeline_omitted"] == 600 + len(before["timeline"]) - 500
    kept = [e["said"] for e in large["timeline"]]
    assert 20 < len(kept) < 40 and kept[-1].startswith("40x"), "the newest, about 1 MiB of them"
    assert sum(len(k) for k in kept) < (1 << 20) + 33 * 1024
    assert large["timeline_omitted"] == 640 + len(before["timeline"]) - len(kept)


@pytest.mark.asyncio
async def test_an_answer_being_written_holds_no_database_connection(settings: Settings) -> None:
    """A desk that stops reading its answer (a stalled client, a slow link) holds a socket, not
    one of the pool's few connections: a handful of such desks would otherwise leave every
    other caller — agents, the survey page, readiness — waiting for a connection."""
    console = build_service("console", settings)
    async with served(console):
        writing, release = asyncio.Event(), asyncio.Event()

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                writing.set()
                await release.wait()  # the client reads nothing

        bearer = f"Bearer {token(settings, 'ops')}".encode()
        scope = get_scope("/api/tickets", b"limit=200", ((b"authorization", bearer),))
        answering = asyncio.create_task(console.app(scope, no_body, send))
        await asyncio.wait_for(writing.wait(), timeout=10)
        in_use = []
        for _ in range(5):  # the console's own tasks may borrow one now and then
            in_use.append(console.pool.get_size() - console.pool.get_idle_size())
            await asyncio.sleep(0.05)
        release.set()
        await asyncio.wait_for(answering, timeout=10)
    assert min(in_use) == 0, f"connections in use while the answer waits to be written: {in_use}"


@pytest.mark.asyncio
async def test_the_survey_link_lets_the_customer_reject_the_solution(settings: Settings) -> None:
    """sop.md: the customer rejects the solution. The resolution notice's link reopens the
    ticket with what is still wrong (the customer's signed ``reopen``); once it is open again,
    or with nothing said, it does not."""
    async with desk(settings) as world:
        number, agent, link, customer = await _anns_request(world)
        before = await link.get(f"/survey/{number}", params={"token": customer})
        assert 'id="reopen"' not in before.text, "nothing to reopen before the resolution"
        for body in ({"type": "accept"}, {"type": "resolve", "resolution": "Reset it for you"}):
            sent = await agent.post(f"/api/tickets/{number}/commands", json=body)
            assert (await world.decided(agent, sent.json()["command_id"]))["status"] == "accepted"
        [resolved] = await world.tickets("ops", 1, status="resolved")
        page = await link.get(f"/survey/{number}", params={"token": customer})
        assert 'id="reopen"' in page.text and "Not solved?" in page.text
        empty = await link.post(
            f"/survey/{number}", data={"token": customer, "step": "reopen", "reason": "  "}
        )
        assert empty.status_code == 422 and "what is still wrong" in empty.text
        reopened = await link.post(
            f"/survey/{number}",
            data={"token": customer, "step": "reopen", "reason": "Still cannot log in."},
        )
        assert 'data-state="reopened"' in reopened.text, reopened.text
        shown = await world.tickets("ops", 1, status="in_progress")
        again = await link.post(
            f"/survey/{number}",
            data={"token": customer, "step": "reopen", "reason": "Still cannot log in."},
        )
        assert 'data-state="cannot_reopen"' in again.text, again.text
        detail = (await world.client("ops").get(f"/api/tickets/{number}")).json()
    [reopen] = [e for e in detail["timeline"] if e["kind"] == "ticket.reopened"]
    assert (reopen["actor"], reopen["said"]) == ("customer", "Still cannot log in.")
    assert shown[0]["agent_id"] == resolved["agent_id"], "back with the agent who resolved it"


@pytest.mark.asyncio
async def test_a_handler_sees_the_customers_earlier_requests_whichever_group_has_them(
    settings: Settings,
) -> None:
    """sop.md names it a typical exception: a handler without permission to look up the
    customer's earlier requests. The printing agent's ticket lists the same customer's front-line
    one (number, subject, status, group); opening it still needs sight of it."""
    ann = {"name": "Ann", "email": "ann@example.com", "language": "en"}
    async with desk(settings) as world:
        await world.request(0, **SIMPLE, customer=ann)
        await world.request(1, **PRINTER, customer=ann)
        await world.request(2, **PRINTER, customer={**ann, "name": "Bob", "email": "b@example.com"})
        listed = await world.tickets("ops", 3, status="assigned")
        [inquiry] = [t for t in listed if t["group_id"] == "front-line"]
        [printer] = [
            t for t in listed if (t["group_id"], t["customer_name"]) == ("printing", "Ann")
        ]
        holder = world.client(printer["agent_id"])
        detail = (await holder.get(f"/api/tickets/{printer['number']}")).json()
        other = await holder.get(f"/api/tickets/{inquiry['number']}")
    assert [
        (h["number"], h["subject"], h["status"], h["group_id"]) for h in detail["customer_history"]
    ] == [(inquiry["number"], SIMPLE["subject"], "assigned", "front-line")], "Ann's, not Bob's"
    assert other.status_code == 403


@pytest.mark.asyncio
async def test_a_subject_search_too_short_for_its_index_is_refused_and_a_longer_one_finds(
    settings: Settings,
) -> None:
    """``q`` of one or two characters (or of wildcards and spaces alone) cannot use the subject's
    trigram index: each read the whole tickets table on one of the pool's connections, and a
    loop of them starved the console. Such a search is refused as a bad filter is; three
    letters or more still find the ticket."""
    async with desk(settings) as world:
        await world.request(0, **SIMPLE)  # 请问如何重置密码
        [ticket] = await world.tickets("ops", 1)
        operator = world.client("ops")
        refused = {
            q: await operator.get("/api/tickets", params={"q": q})
            for q in ("密", "密码", " 密码  ", "%%%", "___", "a %")
        }
        found = {
            q: await operator.get("/api/tickets", params={"q": q})
            for q in ("重置密", "重置密码", "  重置密码 ", "请问如何重置密码")
        }
    for q, answer in refused.items():
        assert answer.status_code == 422, (q, answer.text)
        problem = answer.json()
        assert problem["code"] == "invalid_request", q
        assert problem["message"].startswith("query.q: "), q
        assert "at least 3 letters or digits" in problem["message"], q
        assert [e["loc"] for e in problem["errors"]] == [["query", "q"]], q
    for q, answer in found.items():
        assert answer.status_code == 200, (q, answer.text)
        assert [t["number"] for t in answer.json()["items"]] == [ticket["number"]], q


@pytest.mark.asyncio
async def test_a_subject_search_that_runs_too_long_is_cut_short_and_answered(
    settings: Settings,
) -> None:
    """A search the index narrows little still reads much of the table, holding a connection
    as long as it runs. It runs for SEARCH_TIMEOUT at most (here it waits on a lock instead,
    which the bound counts too) and is answered 422 naming ``q``, never left to hang or a 500."""
    console = build_service("console", settings)
    async with (
        served(console) as url,
        httpx.AsyncClient(
            base_url=url, timeout=8, headers={"Authorization": f"Bearer {token(settings, 'ops')}"}
        ) as operator,
    ):
        async with console.pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            answer = await operator.get("/api/tickets", params={"q": "printer"})
            took = time.monotonic() - started
        after = await operator.get("/api/tickets", params={"q": "printer"})
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert (problem["code"], problem["field"]) == ("invalid_request", "q")
    assert "longer than 2 s" in problem["message"]
    assert 2 <= took < 5, took
    assert (after.status_code, after.json()["items"]) == (200, [])  # the lock gone: answered


@pytest.mark.asyncio
async def test_a_blank_or_non_text_command_id_is_refused_never_replaced(
    settings: Settings,
) -> None:
    """A falsy ``command_id`` ("", 0, false) was replaced by a fresh one: each retry of the same
    reply was a new command, and the customer got it twice. Only a missing id is made; a given
    one is judged as given."""
    async with desk(settings) as world:
        await world.request(0, **SIMPLE)
        [ticket] = await world.tickets("ops", 1, status="assigned")
        agent = world.client(ticket["agent_id"])
        path = f"/api/tickets/{ticket['number']}/commands"
        answers = {
            repr(given): await agent.post(
                path, json={"type": "respond", "message": "Done.", "command_id": given}
            )
            for given in ("", "   ", 0, False, None)
        }
        sent = await world.console.pool.fetchval("SELECT count(*) FROM commands")
    for given, answer in answers.items():
        assert answer.status_code == 422, (given, answer.text)
        problem = answer.json()
        assert problem["code"] == "invalid_command", given
        assert "command_id" in problem["message"], given
    assert sent == 0


@pytest.mark.asyncio
async def test_a_survey_link_with_a_token_too_long_gets_the_pages_invalid_state(
    settings: Settings,
) -> None:
    """A ``?token=`` over the bound was FastAPI's JSON 422 on what is a page: now the page's
    own "invalid" state, as for any token that does not verify (never verified either)."""
    async with (
        served(build_service("console", settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as link,
    ):
        over = await link.get("/survey/REQ-2026-000001", params={"token": "t" * 5000})
        forged = await link.get("/survey/REQ-2026-000001", params={"token": "t" * 100})
    for answer in (over, forged):
        assert answer.status_code == 403, answer.text[:200]
        assert answer.headers["content-type"].startswith("text/html")
        assert 'data-state="invalid"' in answer.text

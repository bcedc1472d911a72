"""Tokens that do not verify are refused before a request takes what the console has few of: a
database connection (DESK_DB_POOL_MAX_SIZE) and a sending slot (half of them). Every request
took a connection to read the clock, and every command a slot, before its token was even read:
a flood of ``Authorization: Bearer x`` held them all, and real agents got 503, /ready failed.
Genuine tokens that live too long, or had expired when the console last read its clock (an old
survey link), are refused the same way."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services import build_service
from services.console.api import Console
from shared.settings import Settings
from tests.console.support import served
from tests.console.test_inbox import web_request
from tests.support.credentials import token

NUMBER = "REQ-2026-000001"


def forged(genuine: str) -> str:
    """``genuine`` with one character of its signature changed."""
    signed, _, signature = genuine.rpartition(".")
    changed = "B" if signature[10] == "A" else "A"
    return f"{signed}.{signature[:10]}{changed}{signature[11:]}"


def person_calls(client: httpx.AsyncClient, name: str, value: str) -> dict[str, Any]:
    """The routes of the agents' desks and dashboard a token ``value`` knocks on, by case."""
    bearer = {"Authorization": f"Bearer {value}"}
    cookie = {"Cookie": f"desk_token={value}"}
    return {
        f"a read, {name}": client.get("/api/me", headers=bearer),
        f"a list, {name}": client.get("/api/tickets", headers=bearer),
        f"the stream, {name}": client.get("/api/stream", headers=bearer),
        f"a ticket command, {name}": client.post(
            f"/api/tickets/{NUMBER}/commands", json={"type": "accept"}, headers=bearer
        ),
        f"an agent command, {name}": client.post(
            "/api/agents/li.na/commands", json={"type": "go_off_shift"}, headers=bearer
        ),
        f"the dashboard, {name}": client.get("/", headers=cookie),
        f"its tiles, {name}": client.get("/board", headers=cookie),
        f"signing in, {name}": client.post("/login", data={"token": value}),
    }


def client_calls(client: httpx.AsyncClient, name: str, value: str) -> dict[str, Any]:
    """The channel clients' routes a token ``value`` knocks on, by case."""
    bearer = {"Authorization": f"Bearer {value}"}
    return {
        f"a request, {name}": client.post(
            "/requests",
            content=json.dumps(web_request()).encode(),
            headers={**bearer, "Content-Type": "application/json"},
        ),
        f"a conversation, {name}": client.get("/requests/some-id/messages", headers=bearer),
    }


async def answered(calls: dict[str, Any]) -> dict[str, int | str]:
    """Each call's status, or the name of what went wrong (a timeout: it waited for the pool)."""
    answers = await asyncio.gather(*calls.values(), return_exceptions=True)
    return {
        case: answer.status_code if isinstance(answer, httpx.Response) else type(answer).__name__
        for case, answer in zip(calls, answers, strict=True)
    }


@pytest.mark.asyncio
async def test_tokens_that_do_not_verify_are_refused_while_every_connection_and_slot_is_held(
    settings: Settings,
) -> None:
    service = build_service("console", settings)
    assert isinstance(service.http, FastAPI)
    console: Console = service.http.state.console
    ops = token(settings, "ops")
    expired = token(
        settings, "ops", ttl=timedelta(hours=1), now=datetime.now(UTC) - timedelta(hours=2)
    )
    too_long = token(settings, "ops", ttl=settings.token_max_ttl + timedelta(days=1))
    bad = {"x": "x", "forged": forged(ops), "expired": expired, "too long-lived": too_long}
    other_ticket = token(settings, "customer", ticket="REQ-2026-000002")
    async with served(service) as url, httpx.AsyncClient(base_url=url, timeout=3) as client:

        async def refusals() -> dict[str, int | str]:
            """Each case's status, or what went wrong (a timeout: it waited for the pool)."""
            calls: dict[str, Any] = {}
            for name, value in bad.items():
                calls |= person_calls(client, name, value) | client_calls(client, name, value)
                calls |= {
                    f"the survey, {name}": client.get(f"/survey/{NUMBER}", params={"token": value}),
                    f"a score, {name}": client.post(
                        f"/survey/{NUMBER}", data={"token": value, "score": "4"}
                    ),
                }
            calls["the survey, another ticket's link"] = client.get(
                f"/survey/{NUMBER}", params={"token": other_ticket}
            )
            return await answered(calls)

        wanted = {
            case: 303 if "dashboard" in case else 403 if "survey" in case or "score" in case
            else 401
            for case in await refusals()
        }  # fmt: skip
        held = [
            await asyncio.wait_for(service.pool.acquire(), 30)
            for _ in range(settings.db_pool_max_size)
        ]
        try:
            async with AsyncExitStack() as slots:
                for _ in range(max(1, settings.db_pool_max_size // 2)):
                    await slots.enter_async_context(console.courier.slot())
                # Answered at once (the client waits 3 s), holding nothing.
                assert await refusals() == wanted
        finally:
            for conn in held:
                await service.pool.release(conn)
        # A token that verifies still gets in.
        genuine = {"Authorization": f"Bearer {ops}"}
        assert (await client.get("/api/me", headers=genuine)).status_code == 200
        command = await client.post(
            f"/api/tickets/{NUMBER}/commands", json={"type": "accept"}, headers=genuine
        )
        assert command.status_code == 404  # past the door: no such ticket
        assert (await client.post("/login", data={"token": ops})).status_code == 303


@pytest.mark.asyncio
async def test_tokens_of_a_kind_the_route_never_admits_are_refused_while_all_is_held(
    settings: Settings,
) -> None:
    """A genuine token of the wrong kind — a customer's survey link, a channel client's — took a
    sending slot and a connection before it was refused (403), competing with the agents for
    them; so did a person's token on the channel's routes. Its kind is in the token: with every
    connection and slot held, each is still refused at once."""
    service = build_service("console", settings)
    assert isinstance(service.http, FastAPI)
    console: Console = service.http.state.console
    no_person = {
        "a customer's": token(settings, "customer", ticket=NUMBER),
        "a channel client's": token(settings, "channel:webform"),
    }
    no_client = {"an agent's": token(settings, "ops"), "a customer's": no_person["a customer's"]}
    async with served(service) as url, httpx.AsyncClient(base_url=url, timeout=3) as client:

        async def refusals() -> dict[str, int | str]:
            """Each case's status, or what went wrong (a timeout: it waited for the pool)."""
            calls: dict[str, Any] = {}
            for name, value in no_person.items():
                calls |= person_calls(client, name, value)
            for name, value in no_client.items():
                calls |= client_calls(client, name, value)
            return await answered(calls)

        wanted = {
            case: 303 if "dashboard" in case else 401 if "tiles" in case or "signing" in case
            else 403
            for case in await refusals()
        }  # fmt: skip
        assert await refusals() == wanted  # nothing held: the same answers as before the fix
        held = [
            await asyncio.wait_for(service.pool.acquire(), 30)
            for _ in range(settings.db_pool_max_size)
        ]
        try:
            async with AsyncExitStack() as slots:
                for _ in range(max(1, settings.db_pool_max_size // 2)):
                    await slots.enter_async_context(console.courier.slot())
                # Answered at once (the client waits 3 s), holding nothing.
                assert await refusals() == wanted
        finally:
            for conn in held:
                await service.pool.release(conn)

"""The live stream from outside: desks left open do not starve the console, and a stream does
not outlive its caller's token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, aclosing
from datetime import timedelta
from typing import Any

import httpx
import pytest

from shared.settings import Settings
from tests.console.support import SIMPLE, desk
from tests.support.credentials import token
from tests.support.waiting import eventually

pytestmark = pytest.mark.asyncio


async def _opened(stack: AsyncExitStack, client: httpx.AsyncClient) -> AsyncIterator[str]:
    """A stream, open as a desk keeps it: its first line read, the rest left waiting."""
    response = await stack.enter_async_context(client.stream("GET", "/api/stream"))
    assert response.status_code == 200
    # Held as long as the stack: a line iterator dropped and collected closes its stream.
    lines = await stack.enter_async_context(aclosing(_generator(response.aiter_lines())))
    first = await anext(lines)
    assert first.startswith("retry:")
    return lines


def _generator(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """httpx's line iterator as what it is, an async generator (typed as an iterator)."""
    assert isinstance(lines, AsyncGenerator)
    return lines


async def test_streams_left_open_do_not_hold_the_consoles_connections(settings: Settings) -> None:
    small = settings.replace(db_pool_max_size=3)
    async with desk(small) as world, AsyncExitStack() as stack:
        desks = [world.client(agent) for agent in ("li.na", "wang.qiang", "zhao.lei")]
        # Twice as many streams as the console has connections, all open at once.
        await asyncio.wait_for(
            asyncio.gather(*(_opened(stack, desks[n % 3]) for n in range(6))), timeout=20
        )
        started = time.monotonic()
        me = await asyncio.wait_for(desks[0].get("/api/me"), timeout=10)
        listed = await asyncio.wait_for(desks[2].get("/api/tickets"), timeout=10)
        assert (me.status_code, listed.status_code) == (200, 200)
        assert time.monotonic() - started < 5


async def test_a_stream_ends_when_its_token_expires(settings: Settings) -> None:
    quick = settings.replace(console_stream_recheck="500ms")
    async with desk(quick) as world:
        short = token(quick, "li.na", ttl=timedelta(seconds=3))
        client = httpx.AsyncClient(
            base_url=world.url, headers={"Authorization": f"Bearer {short}"}, timeout=20
        )
        world.clients.append(client)
        started = time.monotonic()
        lines = []
        async with client.stream("GET", "/api/stream") as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():  # ends when the server ends the stream
                lines.append(line)
        assert "event: signed_out" in lines
        # Ended within a check of the expiry (3 s), not at the next keepalive or never.
        assert 2 < time.monotonic() - started < 8
        # And the desk reconnecting with the same token is refused.
        again = await client.get("/api/stream")
        assert again.status_code == 401


async def test_a_stream_still_delivers_across_its_checks(settings: Settings) -> None:
    quick = settings.replace(console_stream_recheck="200ms")
    async with desk(quick) as world, AsyncExitStack() as stack:
        lines = await _opened(stack, world.client("zhao.lei"))
        await asyncio.sleep(1)  # several checks pass; the caller is still let in
        await world.request(1, **SIMPLE)  # the front line's, which zhao.lei supervises
        seen = []
        async with asyncio.timeout(30):
            async for line in lines:
                seen.append(line)
                if line == "event: ticket":
                    break
        assert "event: signed_out" not in seen


async def test_one_person_holds_at_most_so_many_streams(settings: Settings) -> None:
    capped = settings.replace(console_streams_per_caller=2)
    async with desk(capped) as world:
        li_na, wang_qiang = world.client("li.na"), world.client("wang.qiang")
        async with AsyncExitStack() as stack:
            await _opened(stack, li_na)
            await _opened(stack, li_na)
            refused = await li_na.get("/api/stream")
            assert refused.status_code == 429
            assert refused.json()["code"] == "too_many_streams"
            assert refused.headers["Retry-After"]
            await _opened(stack, wang_qiang)  # another person is not counted against her
        # Her streams closed, she may open one again (once the console has seen them go).
        async with AsyncExitStack() as stack:
            await eventually(
                lambda: _opened_or_refused(stack, li_na), lambda ok: ok, what="a stream again"
            )


async def _opened_or_refused(stack: AsyncExitStack, client: httpx.AsyncClient) -> bool:
    response = await stack.enter_async_context(client.stream("GET", "/api/stream"))
    return response.status_code == 200


async def _until(lines: AsyncIterator[str], event: str, within: float) -> list[str]:
    """Lines read up to ``event`` (an error if it does not come ``within`` seconds)."""
    seen: list[str] = []
    async with asyncio.timeout(within):
        async for line in lines:
            seen.append(line)
            if line == f"event: {event}":
                return seen
    raise AssertionError(f"the stream ended before {event}: {seen}")


async def test_the_stream_outlives_the_loss_of_its_listening_connection(
    settings: Settings,
) -> None:
    """A PostgreSQL restart, a failover or an idle session killed ends the connection the
    stream listens on without an error: the worker waited for good, no desk got another change
    and /ready said all was well. Now the worker starts again, every desk is told to reload
    (what changed meanwhile is not known), and changes flow again."""
    quick = settings.replace(task_restart_backoff="100ms")
    async with desk(quick) as world, AsyncExitStack() as stack:
        lines = await _opened(stack, world.client("zhao.lei"))
        await world.request(1, **SIMPLE)
        await _until(lines, "ticket", 30)
        console = world.console
        killed = await console.pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN %' AND datname = current_database()"
        )
        assert killed == 1
        await _until(lines, "resync", 30)
        await world.request(2, **SIMPLE)
        await _until(lines, "ticket", 30)
        # Up again once it has run as long as its pause (100 ms) without failing: the change
        # above can come sooner than that on a fast machine.
        await eventually(
            console.readiness, lambda checks: all(checks.values()), timeout=5, what="ready"
        )


async def test_a_caller_who_cannot_be_checked_is_held_not_signed_out(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream's periodic check of its caller needs the database. While it cannot be made (a
    restart, a failover) the stream shows nothing new and stays open — it used to send
    ``signed_out``, and every open dashboard went to the sign-in page; once a check succeeds
    the desk is told to reload what it missed."""
    quick = settings.replace(console_stream_recheck="200ms")
    async with desk(quick) as world, AsyncExitStack() as stack:
        lines = await _opened(stack, world.client("zhao.lei"))
        clock = world.console.clock
        real_now = clock.now

        async def away(conn: Any = None) -> object:
            if conn is None:  # the stream's check (the console's consumers pass theirs)
                raise ConnectionRefusedError("the database is away")
            return await real_now(conn)

        monkeypatch.setattr(clock, "now", away)
        await asyncio.sleep(1.0)  # several checks fail
        await world.request(1, **SIMPLE)  # the front line's, which zhao.lei supervises
        await asyncio.sleep(3.0)  # recorded and routed meanwhile: not shown, unchecked
        monkeypatch.setattr(clock, "now", real_now)
        seen = await _until(lines, "resync", 10)
        await world.request(2, **SIMPLE)
        after = await _until(lines, "ticket", 30)
    assert "event: signed_out" not in seen + after
    assert "event: ticket" not in seen, "nothing shown while the caller could not be checked"

"""Demo work: agents take their assigned tickets through, customers rate the outcome.

It follows ``dispatch.events`` for assignments and, for each, sends what an agent's desk and a
customer's survey link would send, at a person's pace (``pace`` scales it): accept, respond,
start_work, resolve as the assignee; then the customer rates, or now and then reopens (dispatch
assigns the ticket again, and that assignment is worked like any other). Every command is signed
with :func:`shared.credentials.sign_command` under a token from the local keys: the agents' from the
operators' key, the customer's (bound to the one ticket) from the key that vouches for
customers, as a resolution notice's link would carry it. Given the console's address, the
customer answers on its survey page instead, with that token. ``desk demo`` and ``desk up
--demo`` run it beside the request traffic of :mod:`services.intake.demo`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.dispatch.events import EVENTS_TOPIC, TICKET_COMMANDS, TicketAssigned
from services.vocabulary import CUSTOMER_COMMANDS
from shared.credentials import issue_token, sign_command
from shared.kafka import client_options, ensure_topics, make_producer
from shared.keys import Key, KeyRing
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)
TOKEN_TTL = timedelta(hours=8)
_STEPS: list[tuple[str, dict[str, Any], tuple[float, float]]] = [
    ("accept", {}, (2, 10)),
    ("respond", {"message": "您好，我们正在处理。 We are on it."}, (5, 20)),
    ("start_work", {}, (2, 8)),
    (
        "resolve",
        {
            "resolution": "已解决。 Fixed; please tell us how we did.",
            # What the shipped policy asks of a complaint's resolution (sop.md).
            "cause": "配置错误 A wrong setting",
            "actions": "已更正并复查 Corrected and checked",
            "compensation": "无需补偿 None needed",
        },
        (10, 45),
    ),
]
"""What an agent does with a ticket, and how many seconds each step takes them (at pace 1)."""
_SCORES = [5, 5, 5, 5, 5, 4, 4, 4, 4, 3, 2]
"""Customers' scores: about 82 % satisfied (4 or 5), so CSAT hovers around the 90 % target."""
REOPEN_SHARE = 0.06


class DeskWork:
    """The agents and customers of the demo: who signs what, and how fast they work."""

    def __init__(
        self,
        settings: Settings,
        *,
        pace: float,
        seed: int | None = None,
        console_url: str | None = None,
        reopen_share: float = REOPEN_SHARE,
    ) -> None:
        ring = KeyRing.from_settings(settings)
        agents, customers = ring.issuer_of("agents"), ring.issuer_of("customers")
        if agents is None or customers is None:
            raise LookupError("the demo needs keys vouching for agents and customers")
        self.settings = settings
        self.agents_key: Key = agents
        self.customers_key: Key = customers
        self.pace = pace
        self.console_url = console_url
        self.reopen_share = reopen_share
        self.random = random.Random(seed)
        self.commands = 0
        self.handled = 0
        self._tokens: dict[str, tuple[str, datetime]] = {}

    def token(self, actor: str, ticket: str | None = None) -> str:
        """An agent's token (kept while valid), or a customer's for one ticket."""
        now = datetime.now(UTC)
        if actor == "customer":
            return issue_token(
                self.customers_key,
                "customer",
                now=now,
                ttl=TOKEN_TTL,
                ticket=ticket,
                commands=CUSTOMER_COMMANDS,
            )
        held = self._tokens.get(actor)
        if held is None or held[1] - now < timedelta(minutes=5):
            token = issue_token(self.agents_key, actor, now=now, ttl=TOKEN_TTL)
            held = self._tokens[actor] = (token, now + TOKEN_TTL)
        return held[0]

    async def work(self, producer: AIOKafkaProducer, number: str, agent: str) -> None:
        """One assignment, from accepting it to the customer's rating (or reopening)."""
        for kind, fields, took in _STEPS:
            await asyncio.sleep(self.random.uniform(*took) * self.pace)
            await self.send(producer, number, agent, {"type": kind, **fields})
        await asyncio.sleep(self.random.uniform(5, 30) * self.pace)
        if self.random.random() < self.reopen_share:
            reopen = {"type": "reopen", "reason": "还是不行。 Still broken."}
            await self.send(producer, number, "customer", reopen)
            return
        rating = {"score": self.random.choice(_SCORES), "comment": "谢谢 Thanks"}
        if not (self.console_url and await self.answer_survey(number, rating)):
            await self.send(producer, number, "customer", {"type": "record_satisfaction", **rating})
        self.handled += 1

    async def send(
        self, producer: AIOKafkaProducer, number: str, actor: str, fields: dict[str, Any]
    ) -> None:
        body = {"command_id": str(uuid.uuid4()), "ticket_number": number, **fields}
        value = json.dumps(body, ensure_ascii=False).encode()
        headers = sign_command(self.token(actor, number), value)
        await producer.send(
            self.settings.topic(TICKET_COMMANDS), value=value, key=number.encode(), headers=headers
        )
        self.commands += 1

    async def answer_survey(self, number: str, rating: dict[str, Any]) -> bool:
        """The customer follows the link of the resolution notice: the console's survey page."""
        form = {"token": self.token("customer", number), **rating}
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.post(f"{self.console_url}/survey/{number}", data=form)
        except httpx.HTTPError as error:
            log.warning("survey page unreachable; rating by command", error=repr(error))
            return False
        self.commands += 1
        return response.status_code == 200


def _finished(tickets: set[asyncio.Task[None]]) -> Any:
    """Forget a finished ticket's task; say why if it failed (never silently)."""

    def done(task: asyncio.Task[None]) -> None:
        tickets.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("demo work on a ticket failed", error=repr(task.exception()))

    return done


async def run_desk_work(
    settings: Settings,
    *,
    stop: asyncio.Event,
    pace: float = 1.0,
    seed: int | None = None,
    console_url: str | None = None,
    reopen_share: float = REOPEN_SHARE,
) -> int:
    """Work every ticket assigned from now on until ``stop``; then let the tickets in hand
    finish (two minutes at most). Returns how many tickets were taken through (rated; a
    reopened ticket is not, unless assigned and worked again)."""
    desk = DeskWork(
        settings, pace=pace, seed=seed, console_url=console_url, reopen_share=reopen_share
    )
    await ensure_topics(settings, [settings.topic(t) for t in (EVENTS_TOPIC, TICKET_COMMANDS)])
    producer = make_producer(settings, client_id="desk-demo-agents")
    consumer = AIOKafkaConsumer(
        settings.topic(EVENTS_TOPIC),
        **client_options(settings),
        auto_offset_reset="latest",
        fetch_max_wait_ms=min(settings.kafka_fetch_max_wait_ms, 200),
    )
    await producer.start()
    await consumer.start()
    assigned = f'"{TicketAssigned.event_type()}"'.encode()
    tickets: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    if record.value and assigned in record.value:
                        data = json.loads(record.value)["data"]
                        task = asyncio.create_task(
                            desk.work(producer, data["number"], data["agent_id"])
                        )
                        tickets.add(task)
                        task.add_done_callback(_finished(tickets))
        if tickets:
            await asyncio.wait(tickets, timeout=120)
        await producer.flush()
    finally:
        for task in tickets:
            task.cancel()
        await asyncio.gather(*tickets, return_exceptions=True)
        with contextlib.suppress(Exception):
            await consumer.stop()
        await producer.stop()
    log.info("demo work done", tickets=desk.handled, commands=desk.commands)
    return desk.handled

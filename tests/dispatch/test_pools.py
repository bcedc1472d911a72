"""dispatch scaled out: two instances (two members of each consumer group, one database) share
the work; capacity limits and queue order hold, and a batch waits only for the pools it
touches. Real broker, real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from services.dispatch.app import build as dispatch
from services.dispatch.pools import DESK_KEY, lock_key, pools
from services.policy import Policy
from services.vocabulary import PRIORITY_RANK
from shared.database import connect
from shared.policyfile import load_policy
from shared.service import Service
from shared.settings import Settings
from tests.dispatch.support import triaged
from tests.dispatch.test_dispatch import send_command, send_triaged
from tests.support.kafka import KafkaProbe
from tests.support.services import running_together
from tests.support.waiting import eventually

POLICY_FILE = Path(__file__).with_name("pools.yaml")
POLICY, _ = load_policy(POLICY_FILE, Policy)
LINES = {"a": "pa", "b": "pb", "c": "pc", "d": "pd"}
TYPE = "servicedesk.ticket.{}.v1"


def test_groups_that_share_an_agent_are_one_pool() -> None:
    assert pools(POLICY.directory) == {
        "a": "a",
        "b": "a",  # agent ab works in both
        "c": "c",
        "d": "d",
        "supervisors": "supervisors",
    }


class Handled:
    """Messages each instance's subscriptions handled (the real handlers, counted)."""

    def __init__(self, services: Sequence[Service]) -> None:
        self.counts: Counter[tuple[int, str]] = Counter()
        for n, service in enumerate(services):
            for runner in service.consumers:
                subscription = runner.subscription
                counted = self._counted(n, subscription.name, subscription)
                subscription.handle = counted  # type: ignore[method-assign,assignment]

    def _counted(
        self, n: int, name: str, subscription: Any
    ) -> Callable[[Any, Sequence[Any]], Coroutine[Any, Any, None]]:
        handle = subscription.handle

        async def counted(uow: Any, messages: Sequence[Any]) -> None:
            await handle(uow, messages)
            self.counts[n, name] += len(messages)

        return counted


def two_instances(settings: Settings) -> tuple[Service, Service]:
    """Two dispatch instances of one deployment, under the pools policy."""
    settings = settings.replace(policy_file=POLICY_FILE)
    return dispatch(settings), dispatch(settings)


async def dispatched(service: Service) -> int:
    found: int = await service.pool.fetchval("SELECT count(*) FROM tickets")
    return found


async def work_the_tickets(service: Service, kafka: KafkaProbe, total: int) -> None:
    """Agents accept and resolve every ticket assigned to them until ``total`` are resolved."""
    worked: set[str] = set()
    while True:
        rows = await service.pool.fetch(
            "SELECT number, agent_id, status FROM tickets WHERE status IN ('assigned', 'resolved')"
        )
        if sum(r["status"] == "resolved" for r in rows) == total:
            return
        for row in rows:
            if row["status"] == "assigned" and row["number"] not in worked:
                worked.add(row["number"])
                await send_command(kafka, row["number"], "accept", row["agent_id"])
                await send_command(
                    kafka, row["number"], "resolve", row["agent_id"], resolution="ok"
                )
        await asyncio.sleep(0.05)


def check_capacity_and_queue_order(envelopes: list[dict[str, Any]]) -> tuple[int, int]:
    """Fold the ticket events in commit order (position): no agent is ever over capacity, and
    every ticket served from a queue is that queue's head (priority, age, number) at that
    moment. Returns (assignments, of which from a queue)."""
    capacity = {a.id: a.capacity for a in POLICY.directory.agents}
    load: Counter[str] = Counter()
    queues: dict[str, dict[str, tuple[int, datetime, str]]] = {}
    assigned = from_queue = 0
    for envelope in envelopes:
        data, kind = envelope["data"], envelope["type"]
        if kind == TYPE.format("queued"):
            queued_at = datetime.fromisoformat(envelope["time"])
            key = (PRIORITY_RANK[data["priority"]], queued_at, data["number"])
            queues.setdefault(data["group_id"], {})[data["ticket_id"]] = key
        elif kind == TYPE.format("assigned"):
            assigned += 1
            agent = data["agent_id"]
            load[agent] += 1
            assert load[agent] <= capacity[agent], f"{agent} over capacity at {data['number']}"
            if data["cause"] == "queue":
                from_queue += 1
                queue = queues[data["group_id"]]
                head = min(queue, key=lambda ticket: queue[ticket])
                assert data["ticket_id"] == head, f"{data['number']} served before the head"
                del queue[head]
        elif kind == TYPE.format("resolved"):
            load[data["agent_id"]] -= 1
    return assigned, from_queue


@pytest.mark.asyncio
async def test_two_instances_share_the_work_and_keep_capacity_limits_and_queue_order(
    settings: Settings, kafka: KafkaProbe
) -> None:
    first, second = two_instances(settings)
    handled = Handled([first, second])
    total, at_once = 160, 120
    async with running_together(first, second):
        groups = list(LINES)
        priorities = ("normal", "high", "normal", "low", "urgent")
        for n in range(at_once):  # arrive together: most of them queue
            line, priority = LINES[groups[n % 4]], priorities[(n // 4) % 5]
            await send_triaged(kafka, triaged(n, product_line=line, priority=priority))
        await eventually(lambda: dispatched(first), lambda n: n == at_once, timeout=60)

        async def later() -> None:  # more arrive while the agents work
            for n in range(at_once, total):
                await send_triaged(kafka, triaged(n, product_line=LINES[groups[n % 4]]))

        await asyncio.wait_for(
            asyncio.gather(work_the_tickets(first, kafka, total), later()), timeout=180
        )
        rows = await first.pool.fetch(
            "SELECT envelope::text FROM events WHERE type = ANY($1::text[]) ORDER BY position",
            [TYPE.format(k) for k in ("queued", "assigned", "resolved")],
        )
        dead = await first.pool.fetchval("SELECT count(*) FROM dead_letters")
    assigned, from_queue = check_capacity_and_queue_order([json.loads(r[0]) for r in rows])
    assert assigned == total
    assert from_queue > 80, "most tickets waited in a queue and were served from it"
    assert dead == 0
    for subscription in ("events", "commands"):
        shares = [handled.counts[n, subscription] for n in (0, 1)]
        assert all(share > 0 for share in shares), (subscription, shares)


async def events_partitions(service: Service) -> set[int]:
    runner = next(r for r in service.consumers if r.subscription.name == "events")
    topic = service.settings.topic("intake.events")
    return {tp.partition for tp in runner.assigned if tp.topic == topic}


@pytest.mark.asyncio
async def test_a_batch_waits_only_for_the_pools_it_touches(
    settings: Settings, kafka: KafkaProbe
) -> None:
    first, second = two_instances(settings)
    async with running_together(first, second):
        owned = [await events_partitions(s) for s in (first, second)]
        assert owned[0] and owned[1] and not owned[0] & owned[1]
        n = 0

        async def send(group: str, partition: int) -> None:
            nonlocal n
            n += 1
            await send_triaged(kafka, triaged(n, product_line=LINES[group]), partition)

        # Two rounds to every partition: each instance records the policy version in force
        # (the one batch that takes the whole desk) and settles.
        partitions = sorted(owned[0] | owned[1])
        for round_ in (1, 2):
            for partition in partitions:
                await send("d", partition)
            expected = round_ * len(partitions)
            await eventually(lambda: dispatched(first), lambda k: k == expected)  # noqa: B023

        # A long batch of pool a, held by this test, as a dispatch batch holds it.
        blocked, free = min(owned[0]), min(owned[1])
        conn = await connect(settings.require_database_url())
        try:
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute(f"SELECT pg_advisory_xact_lock_shared({DESK_KEY})")
            await conn.execute(f"SELECT pg_advisory_xact_lock({lock_key('dispatch.pool:a')})")
            await send("b", blocked)  # pool a (b shares agent ab with a): waits
            await send("c", free)  # pool c, on the other instance: goes through
            await send("d", free)
            await eventually(lambda: dispatched(first), lambda k: k == 2 * len(partitions) + 2)
            waiting = await first.pool.fetchval(
                "SELECT count(*) FROM tickets WHERE group_id IN ('a', 'b')"
            )
            await transaction.rollback()
        finally:
            await conn.close()
        await eventually(lambda: dispatched(first), lambda k: k == 2 * len(partitions) + 3)
    assert waiting == 0

"""What the fault modules share: the traffic around a fault, and the time allowed to recover."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.support.system import Figures, System

RATE = 6.0
"""Requests a second the adapter sends throughout (plus a burst per scenario)."""
BURST = 40
"""Requests sent at once when a scenario starts, so the fault finds batches in flight."""
RECOVERY_S = 90.0
"""The stated time: after a fault ends, the invariant — consumer lag zero included — holds
within this many seconds."""

OUTPUT = {
    "intake": "intake.events",
    "dispatch": "dispatch.events",
    "sla": "sla.events",
    "notify": "notify.events",
    "console": "dispatch.events",
}
"""The topic on which a service's work shows (the console publishes nothing: it is busy while the
topics it reads grow, dispatch's most of all)."""


HEALTHY_S = 30.0
"""How long a scenario waits for the promise to hold *before* its fault: if an earlier scenario
left the system broken, this one fails at once, saying so, instead of blaming its own fault."""


@asynccontextmanager
async def under_traffic(
    system: System, *, burst: int = BURST, after_s: float = 3.0
) -> AsyncIterator[Figures]:
    """Steady requests and agents working their tickets; a burst first. The traffic goes on
    ``after_s`` seconds after the block (the fault) ends, then stops, so the invariant is
    checked on a quiet system. Yields the figures measured before (the promise held)."""
    before = await system.invariant.wait(HEALTHY_S)
    assert before.holds, f"broken before this fault (an earlier one?): {before.problems}"
    async with system.adapter.steady(RATE), system.desk.working():
        await system.adapter.burst(burst)
        yield before
        await asyncio.sleep(after_s)


async def mid_batch(system: System, service: str, records: int = 20, timeout: float = 60) -> None:
    """Return once ``service`` is visibly busy: ``records`` more records on its output topic
    than when called."""
    topic = system.settings.topic(OUTPUT[service])
    target = len(system.observer.records(topic)) + records
    deadline = time.monotonic() + timeout
    while len(system.observer.records(topic)) < target:
        if time.monotonic() > deadline:
            raise AssertionError(f"{service} did no work within {timeout}s")
        await asyncio.sleep(0.02)

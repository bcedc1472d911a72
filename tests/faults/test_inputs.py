"""What reaches the system from outside its processes, under traffic.

The driven clock jumps three days forward, then one hour back: every due mark fires once, the
escalations and their notices happen once, going back fires nothing again and delays nothing.
Then a poison record on every topic each service consumes: each is answered — a dead letter
with its reason, or a reason-coded rejection — and nothing behind it waits. (Last: a consumer a
poison wedged would fail every scenario after it.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.faults.conftest import Report
from tests.faults.scenarios import RECOVERY_S, under_traffic
from tests.support.system import System
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


def marks(system: System, kind: str) -> int:
    return len(system.invariant.events("sla", kind))


async def _unanswered_clocks(system: System, requests: int) -> None:
    """``requests`` tickets nobody works (the desk works only what is assigned while it works),
    waited for until one's first-response clock runs: only sla's timers can breach that clock,
    and a timer's breach climbs the ladder. A ticket the desk answers after the jump is met
    late instead: its breach is recorded with the answer, and nothing escalates."""

    async def running() -> int:
        await system.invariant.read()
        started = system.invariant.events("sla", "sla.clock_started")
        return sum(1 for e in started if e.data.get("metric") == "first_response")

    before = await running()
    await system.adapter.burst(requests)
    await eventually(running, lambda n: n > before, timeout=60, what="a first-response clock")


async def test_the_clock_jumps_three_days_forward(system: System, report: Report) -> None:
    # Every open clock then fires all its marks at once (two warnings, the breach, three
    # levels), each with its events and notices: a small burst is plenty.
    await _unanswered_clocks(system, 5)
    async with under_traffic(system, burst=20):
        await system.set_clock(datetime.now(UTC) + timedelta(days=3))
    figures = await system.invariant.wait(RECOVERY_S, since=system.fault_ended)
    report(figures, fault="driven clock +3 days", breached=marks(system, "sla.clock_breached"))
    assert figures.holds, figures.problems
    assert marks(system, "sla.clock_breached") > 0, "three days late, clocks breach"
    assert marks(system, "sla.escalated") > 0


async def test_the_clock_goes_back_an_hour(system: System, report: Report) -> None:
    """Marks already fired stay fired once (a second breach or level would be a duplicated
    effect), and nothing stored just before the step waits for the clock to catch up."""
    async with under_traffic(system):
        await system.set_clock(system.now() - timedelta(hours=1))
    figures = await system.invariant.wait(RECOVERY_S, since=system.fault_ended)
    report(figures, fault="driven clock -1 hour")
    assert figures.holds, figures.problems


BYTES = ("garbage", "deep", "huge", "wrong_shape")
"""What can reach any topic."""
EVENTS = (*BYTES, "unknown_type", "unknown_version")
COMMANDS = (*BYTES, "unknown_type")

POISONED = [
    ("requests.incoming", "request", "", BYTES),
    ("intake.events", "event", "servicedesk.ticket.triaged.v1", EVENTS),
    ("dispatch.events", "event", "servicedesk.ticket.assigned.v1", EVENTS),
    ("sla.events", "event", "servicedesk.sla.escalated.v1", EVENTS),
    ("tickets.commands", "command", "", COMMANDS),
    ("agents.commands", "command", "", COMMANDS),
    ("notify.deliveries", "request", "", BYTES),
    ("notify.events", "event", "servicedesk.notification.sent.v1", EVENTS),
    ("requests.rejected", "event", "servicedesk.request.rejected.v1", EVENTS),
    ("tickets.commands.rejected", "event", "servicedesk.ticket_command.rejected.v1", EVENTS),
    ("agents.commands.rejected", "event", "servicedesk.agent_command.rejected.v1", EVENTS),
]
"""Every topic a service consumes, what it carries, and the poisons that fit it."""


async def test_a_poison_record_on_every_consumed_topic(system: System, report: Report) -> None:
    async with under_traffic(system):
        for topic, shape, event_type, kinds in POISONED:
            for kind in kinds:
                await system.poison(topic, kind, shape, event_type)
    figures = await system.invariant.wait(RECOVERY_S, since=system.fault_ended)
    poisons = len(system.invariant.poisons)
    report(figures, fault=f"{poisons} poison records on {len(POISONED)} topics")
    assert poisons == sum(len(kinds) for *_, kinds in POISONED)
    assert figures.holds, figures.problems

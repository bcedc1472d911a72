"""What happens to the processes, under traffic: PostgreSQL restarted; each service killed,
every service stopped (also while PostgreSQL hangs), a second instance of each joining,
mid-batch; the broker stopped for a minute. The work in flight is done once, by someone;
nothing is lost; every group settles.

One system for the module, the faults in sequence, the invariant checked after each; the
broker's minute comes last, as the fault most likely to leave the system broken for the rest.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from services import service_names
from shared.durations import parse_duration
from tests.faults.conftest import Report
from tests.faults.scenarios import RECOVERY_S, mid_batch, under_traffic
from tests.support.system import System, last_words

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

GRACE = "10s"
LEASE = "15s"
"""notify's lease: how long a notice sent but not recorded by a killed sender waits to go again
(above DESK_NOTIFY_SEND_TIMEOUT, 10 s: a slow send is never taken for a dead one)."""
SYSTEM_ENV = {"DESK_SHUTDOWN_GRACE": GRACE, "DESK_NOTIFY_LEASE": LEASE}


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgresql_restarted_mid_traffic(system: System, report: Report, mode: str) -> None:
    async with under_traffic(system):
        await mid_batch(system, "intake")
        await system.restart_postgres(mode)
    figures = await system.invariant.wait(RECOVERY_S, since=system.fault_ended)
    report(figures, fault=f"PostgreSQL restart, {mode} shutdown")
    assert figures.holds, figures.problems


@pytest.mark.parametrize("service", service_names())
async def test_sigkill_mid_batch(system: System, report: Report, service: str) -> None:
    async with under_traffic(system):
        await mid_batch(system, service)
        await system.kill(service)
    figures = await system.invariant.wait(RECOVERY_S, since=system.fault_ended)
    report(figures, fault=f"SIGKILL of {service} mid-batch")
    assert figures.holds, figures.problems


async def test_sigterm_mid_batch_drains_within_the_grace(system: System, report: Report) -> None:
    """Every service stopped at once mid-batch (a deploy): each drains within the grace, and a
    graceful stop finishes what it started — nothing is left for a lease or a republish to
    redo (unlike a kill, whose repeats are the price of the crash window)."""
    async with under_traffic(system) as before:
        await mid_batch(system, "notify")
        drained = await system.terminate(*service_names())
    figures = await system.invariant.wait(RECOVERY_S, since=system.fault_ended)
    report(figures, fault="SIGTERM of every service mid-batch", drained_s=_rounded(drained))
    _assert_gone_within_the_grace(system, drained)
    assert figures.holds, figures.problems
    redone = {
        "notices received again": figures.notice_repeats - before.notice_repeats,
        "events published again": figures.topic_repeats - before.topic_repeats,
    }
    assert not any(redone.values()), redone


async def test_sigterm_while_postgresql_is_frozen_ends_within_the_grace(
    system: System, report: Report
) -> None:
    """A deploy while the database hangs (a stalled disk): nothing a graceful stop waits on
    answers — queries, their cancellation, the pool's connections — yet every service is gone
    within the grace; what it could not finish is a crash's, done again once PostgreSQL
    answers."""
    async with under_traffic(system):
        await mid_batch(system, "dispatch")
        async with system.frozen_postgres():
            pids, drained = await system.signal_exits(service_names(), signal.SIGTERM)
        await system.restarted(pids)
    figures = await system.invariant.wait(RECOVERY_S, since=system.fault_ended)
    fault = "SIGTERM of every service, PostgreSQL frozen"
    report(figures, fault=fault, drained_s=_rounded(drained))
    _assert_gone_within_the_grace(system, drained)
    assert figures.holds, figures.problems


def _rounded(drained: dict[str, float]) -> dict[str, float]:
    return {name: round(seconds, 1) for name, seconds in drained.items()}


def _assert_gone_within_the_grace(system: System, drained: dict[str, float]) -> None:
    """Every service exited within the grace; if not, the failure says what each last logged
    (CI keeps nothing else)."""
    slowest = max(drained.values())
    if slowest > parse_duration(GRACE).total_seconds():
        raise AssertionError(
            f"a stop took {slowest:.1f} s: {_rounded(drained)}; last words: "
            f"{last_words(system.log, service_names())}"
        )


async def test_a_second_instance_of_each_service_joins_mid_burst(
    system: System, report: Report
) -> None:
    """Every group rebalances while batches are in flight; the newcomers share the work (their
    relays stand by, their workers claim with SKIP LOCKED) and nothing happens twice."""
    async with under_traffic(system):
        await mid_batch(system, "notify")
        extras = await asyncio.gather(*(system.extra_instance(s) for s in service_names()))
    figures = await system.invariant.wait(RECOVERY_S, since=system.fault_ended)
    report(figures, fault="a second instance of each service joins mid-burst")
    stopped = await asyncio.gather(*(system.stop_instance(extra) for extra in extras))
    assert figures.holds, figures.problems
    assert all(code in (0, -signal.SIGTERM) for code in stopped), f"not stopped cleanly: {stopped}"


async def test_the_broker_unavailable_for_60_s(system: System, report: Report) -> None:
    async with under_traffic(system):
        await mid_batch(system, "intake")  # relays and consumers have work in flight
        await system.pause_broker(60)
    figures = await system.invariant.wait(RECOVERY_S, since=system.fault_ended)
    report(figures, fault="broker SIGSTOP 60 s, SIGCONT")
    assert figures.tickets > 0 and figures.notices > 0
    assert figures.holds, figures.problems

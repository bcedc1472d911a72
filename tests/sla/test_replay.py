"""Replay: a ticket's history through the timekeeper gives the clocks the live service keeps."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from services.dispatch.events import (
    TicketReopened,
    TicketResolved,
    TicketResponded,
    TicketResumed,
    WaitingForCustomer,
    WorkStarted,
)
from services.sla.replay import Lifecycle, replay
from services.sla.whatif import Outcome
from shared.events import EventData
from tests.sla.support import SLA, T0, classified, sla_policy
from tests.sla.test_timekeeper import World, assigned, ids

pytestmark = pytest.mark.unit
FRIDAY = datetime.fromisoformat("2026-11-20T17:50:00+01:00")


def history(n: int) -> list[tuple[EventData, datetime]]:
    """A web request on a Friday evening: assigned, answered late, waits for the customer over
    the weekend, resolved, reopened and resolved again."""
    return [
        (classified(n, channel="web", received_at=FRIDAY), FRIDAY),
        (assigned(n), FRIDAY + timedelta(minutes=5)),
        (WorkStarted(**ids(n), agent_id="ann"), FRIDAY + timedelta(minutes=8)),
        (TicketResponded(**ids(n), agent_id="ann", message="m", first_response=True),
         FRIDAY + timedelta(days=4)),
        (WaitingForCustomer(**ids(n), agent_id="ann", question="?"), FRIDAY + timedelta(days=4)),
        (TicketResumed(**ids(n), cause="customer replied", cause_event_id="x"),
         FRIDAY + timedelta(days=6)),
        (TicketResolved(**ids(n), agent_id="ann", resolution="r"),
         FRIDAY + timedelta(days=6, hours=1)),
        (TicketReopened(**ids(n), actor="customer", reason="no"), FRIDAY + timedelta(days=7)),
    ]  # fmt: skip


def live(events: list[tuple[EventData, datetime]], until: datetime) -> World:
    """As the service runs: a perfect timer fires each mark when it is due, between events."""
    world = World()
    for event, at in events:
        world.run_until(at)
        world.on(event, at)
    world.run_until(until)
    return world


def test_a_replay_keeps_the_clocks_the_live_service_keeps() -> None:
    until = FRIDAY + timedelta(days=10)
    world = live(history(1), until)
    policy, version = sla_policy()
    items = [Lifecycle(e, at, f"event-{i + 1}") for i, (e, at) in enumerate(history(1))]
    [clocks] = replay(policy, version, [items], until)
    replayed = {c.clock_id: c for c in clocks}
    assert set(replayed) == set(world.keeper.clocks)
    for clock_id, clock in world.keeper.clocks.items():
        assert replayed[clock_id].model_dump() == clock.model_dump(), clock_id
    outcomes = {c.metric: Outcome.of(c).counted for c in replayed.values()}
    # First response: 30 business minutes on the Berlin office calendar (Monday a holiday) ran
    # out on Tuesday 09:20; the answer came on Tuesday evening. Resolution restarted at the
    # reopen and nobody resolved it again within 24 hours.
    assert outcomes == {
        "first_response": "breached",
        "start_of_work": "met",
        "resolution": "breached",
    }
    assert replayed["clock-00000000-0000-7000-8000-000000000001-resolution"].run == 2


def test_a_proposed_target_changes_only_what_it_should() -> None:
    items = [Lifecycle(e, at, f"event-{i + 1}") for i, (e, at) in enumerate(history(1))]
    until = FRIDAY + timedelta(days=10)
    looser = {**SLA, "targets": [{**t, "target": "3d"} if t.get("when") == {"channel": ["web"]}
                                 else t for t in SLA["targets"]]}  # fmt: skip
    policy, version = sla_policy(looser)
    [found] = replay(policy, version, [items], until)
    clocks = {c.metric: c for c in found}
    assert Outcome.of(clocks["first_response"]).counted == "met"
    assert clocks["first_response"].policy_version == version
    assert Outcome.of(clocks["start_of_work"]).counted == "met"
    assert (clocks["resolution"].run, Outcome.of(clocks["resolution"]).counted) == (2, "breached")


def test_tickets_replayed_one_after_another_keep_to_themselves() -> None:
    policy, version = sla_policy()
    stories = [
        [Lifecycle(e, at, f"{n}-{i}") for i, (e, at) in enumerate(history(n))] for n in (1, 2)
    ]
    first, second = replay(policy, version, stories, FRIDAY + timedelta(days=10))
    assert {c.ticket_id for c in first} == {classified(1).ticket_id}
    assert {c.ticket_id for c in second} == {classified(2).ticket_id}
    assert [Outcome.of(c).counted for c in first] == [Outcome.of(c).counted for c in second]


def test_no_policy_keeps_no_clocks() -> None:
    items = [Lifecycle(classified(1), T0, "event-1")]
    assert list(replay(None, "v", [items], T0 + timedelta(hours=1))) == [[]]

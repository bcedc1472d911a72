"""The dashboard's figures read from the console's own tables (real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from services.console.board import dashboard
from services.console.storage import Clocks
from services.console.visibility import Viewer
from services.policy import Policy
from services.sla.events import ClockBreached, ClockEvent, ClockMet, ClockStarted, ClockStopped
from shared.database import Connection
from shared.eventstore import RecordedEvent
from tests.support.policies import parsed, shipped

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
OPERATOR = Viewer("ops", "Ops", "operator", None)


async def _resolved_by(conn: Connection, agent: str, number: int, days_ago: int) -> None:
    at = NOW - timedelta(days=days_ago)
    await conn.execute(
        "INSERT INTO tickets (ticket_id, number, status, priority, received_at, updated_at, "
        "resolved_by, resolved_at, satisfaction) "
        "VALUES (gen_random_uuid(), $1, 'resolved', 'normal', $2, $2, $3, $2, 5)",
        f"REQ-2026-{number:06d}",
        at,
        agent,
    )


def _reviewing(policy: Policy, period: timedelta) -> Policy:
    assert policy.sla is not None
    sla = policy.sla.model_copy(update={"review_period": period})
    return policy.model_copy(update={"sla": sla})


@pytest.mark.asyncio
async def test_the_agents_review_covers_the_policys_review_period(console: Connection) -> None:
    await console.execute(
        "INSERT INTO agents (agent_id, name, role, groups, capacity, on_shift, updated_at) "
        "VALUES ('li.na', 'Li Na', 'agent', '{front-line}', 5, true, $1)",
        NOW,
    )
    for number, days_ago in enumerate((2, 10, 40), start=1):
        await _resolved_by(console, "li.na", number, days_ago)
    policy = parsed(shipped())

    monthly = await dashboard(console, OPERATOR, policy, NOW)
    weekly = await dashboard(console, OPERATOR, _reviewing(policy, timedelta(days=7)), NOW)

    assert monthly.reviews is not None and weekly.reviews is not None
    assert [(r.agent_id, r.handled) for r in monthly.reviews] == [("li.na", 2)], "30 days"
    assert [(r.agent_id, r.handled) for r in weekly.reviews] == [("li.na", 1)], "7 days"
    assert (monthly.reviews_since, weekly.reviews_since) == (
        NOW - timedelta(days=30),
        NOW - timedelta(days=7),
    )
    agent = Viewer("li.na", "Li Na", "agent", frozenset({"front-line"}))
    mine = await dashboard(console, agent, policy, NOW)
    assert (mine.reviews, mine.reviews_since) == (None, None), "supervisors and above only"


def _clock_events(ticket_id: str, agent: str) -> list[ClockEvent]:
    """A repeating progress clock (customer_update) quiet for two periods — each breached and
    started again —, its third run ended by the agent's update within the target, its fourth
    met at the resolution: all while ``agent`` had the ticket."""
    ids = {
        "ticket_id": ticket_id, "number": "REQ-2026-000009", "metric": "customer_update",
        "clock_id": f"clock-{ticket_id}-customer_update", "cause_event_id": "e",
        "policy_version": "v", "calendar_version": "c",
    }  # fmt: skip
    start = NOW - timedelta(hours=9)

    def started(run: int) -> ClockStarted:
        at = start + timedelta(hours=4 * (run - 1))
        return ClockStarted(
            **ids, run=run, started_at=at, deadline=at + timedelta(hours=4), target_s=14400,
            rule="", calendar="always", calendar_definition={}, warnings=[], ladder=[],
            pauses_when_waiting=True, fulfilled_by=["resolved"], restarts_on_reopen=True,
            group_id="front-line", repeats=True,
        )  # fmt: skip

    events: list[ClockEvent] = []
    for run in (1, 2):
        due = start + timedelta(hours=4 * run)
        events += [
            started(run),
            ClockBreached(
                **ids,
                run=run,
                group_id="front-line",
                agent_id=agent,
                due_at=due,
                target_s=14400,
            ),
            ClockStopped(**ids, run=run, at=due, reason="repeated"),
        ]
    updated = start + timedelta(hours=8, minutes=30)
    met = start + timedelta(hours=8, minutes=45)
    return [
        *events,
        started(3),
        ClockStopped(**ids, run=3, at=updated, reason="updated", in_time=True, agent_id=agent),
        started(4),
        ClockMet(
            **ids,
            run=4,
            group_id="front-line",
            agent_id=agent,
            at=met,
            elapsed_s=1800,
            wall_s=1800,
            late=False,
            fulfilled_by="resolved",
        ),
    ]


@pytest.mark.asyncio
async def test_compliance_counts_every_run_of_a_repeating_clock(console: Connection) -> None:
    """Two quiet periods breached, the third ended by an update in time, the fourth met:
    compliance is two in four, not the last run's 100 %; and so is the review's share in time
    of the agent who had the ticket."""
    await console.execute(
        "INSERT INTO agents (agent_id, name, role, groups, capacity, on_shift, updated_at) "
        "VALUES ('li.na', 'Li Na', 'agent', '{front-line}', 5, true, $1)",
        NOW,
    )
    ticket_id = str(uuid4())
    await console.execute(
        "INSERT INTO tickets (ticket_id, number, status, priority, received_at, updated_at, "
        "agent_id) VALUES ($1, 'REQ-2026-000009', 'in_progress', 'normal', $2, $2, 'wu.hao')",
        ticket_id,
        NOW,
    )  # passed on since: the update's period counts for whom the stop names, not its holder now
    events = _clock_events(ticket_id, "li.na")
    ids = {
        "ticket_id": ticket_id, "number": "REQ-2026-000009", "metric": "specialist_findings",
        "clock_id": f"clock-{ticket_id}-specialist_findings", "cause_event_id": "e",
        "policy_version": "v", "calendar_version": "c", "run": 1,
    }  # fmt: skip
    asked = events[0].model_copy(update={**ids, "group_id": "hardware"})
    late = ClockBreached(
        **ids, group_id="hardware", agent_id="li.na", specialists=True, due_at=NOW,
        target_s=7200,
    )  # fmt: skip
    events += [asked, late]  # the specialists' lateness, not li.na's
    recorded = [
        RecordedEvent(n, uuid4(), str(e.clock_id), n, e.event_type(), ticket_id, NOW, typed=e)
        for n, e in enumerate(events, start=1)
    ]
    projection = Clocks()
    await projection.apply(console, recorded[:4])  # one batch, then the rest: both paths
    await projection.apply(console, recorded[4:])
    await projection.apply(console, recorded[4:])  # a batch read twice changes nothing

    board = await dashboard(console, OPERATOR, parsed(shipped()), NOW)

    figures = {c.metric: (c.met, c.breached) for c in board.sla.compliance}
    assert figures == {"customer_update": (2, 2), "specialist_findings": (0, 1)}
    assert board.reviews is not None and board.review_target == 0.95
    [review] = board.reviews
    assert (review.agent_id, review.clocks, review.in_time) == ("li.na", 4, 2 / 4)


@pytest.mark.asyncio
async def test_an_update_sla_judged_late_counts_as_breached_at_the_deadline(
    console: Connection,
) -> None:
    """An update after the target that sla's timer had not caught up with: no breach event,
    the stop says ``in_time`` false — the period counts as breached, at its deadline, for the
    agent the stop names."""
    await console.execute(
        "INSERT INTO agents (agent_id, name, role, groups, capacity, on_shift, updated_at) "
        "VALUES ('li.na', 'Li Na', 'agent', '{front-line}', 5, true, $1)",
        NOW,
    )
    ticket_id = str(uuid4())
    started, _, _, *_ = _clock_events(ticket_id, "li.na")
    assert isinstance(started, ClockStarted)
    late = ClockStopped(
        **started.model_dump(include={"ticket_id", "number", "metric", "clock_id", "run",
                                      "cause_event_id", "policy_version", "calendar_version"}),
        at=started.deadline + timedelta(minutes=20), reason="updated", in_time=False,
        agent_id="li.na",
    )  # fmt: skip
    again = started.model_copy(update={"run": 2, "started_at": late.at})
    recorded = [
        RecordedEvent(n, uuid4(), str(e.clock_id), n, e.event_type(), ticket_id, NOW, typed=e)
        for n, e in enumerate([started, late, again], start=1)
    ]
    await Clocks().apply(console, recorded)

    rows = await console.fetch("SELECT run, breached_at, met_at, agent_id FROM clock_runs")
    assert [tuple(r) for r in rows] == [(1, started.deadline, None, "li.na")]
    board = await dashboard(console, OPERATOR, parsed(shipped()), NOW)
    assert {c.metric: (c.met, c.breached) for c in board.sla.compliance} == {
        "customer_update": (0, 1)
    }
    assert board.reviews is not None
    assert [(r.agent_id, r.clocks, r.in_time) for r in board.reviews] == [("li.na", 1, 0.0)]

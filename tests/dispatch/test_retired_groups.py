"""A policy version that removes a group: its tickets move, nothing that names it fails (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from services.dispatch.desk import Desk, board_from
from services.dispatch.events import (
    TicketAssigned,
    TicketEscalated,
    TicketQueued,
    TicketReassigned,
)
from services.dispatch.ticket import Ticket
from services.policy import Policy
from services.sla.events import EscalationRaised
from shared.policyfile import PolicyError, parse_policy
from tests.dispatch.support import POLICY_FILE, T0, desk, triaged
from tests.support.recorded import Recorded

pytestmark = pytest.mark.unit


def without_tiny(retire: dict[str, str] | None) -> Policy:
    """The test policy with group ``tiny`` removed (its agents moved to ``least``)."""
    document: dict[str, Any] = yaml.safe_load(POLICY_FILE.read_text())
    directory = document["directory"]
    directory["groups"] = [g for g in directory["groups"] if g["id"] != "tiny"]
    for agent in directory["agents"]:
        agent["groups"] = ["least" if g == "tiny" else g for g in agent["groups"]]
    document["routing"]["matrix"] = [
        r for r in document["routing"]["matrix"] if r["group"] != "tiny"
    ]
    if retire is not None:
        directory["retired_groups"] = [{"id": k, "moved_to": v} for k, v in retire.items()]
    return parse_policy(yaml.safe_dump(document).encode(), Policy)


def tickets_in_tiny() -> list[Ticket]:
    """Three tickets routed to ``tiny`` under the old policy: two assigned (t1, t2), one queued."""
    old, _ = desk()
    for n in (1, 2, 3):
        old.classify(triaged(n, product_line="tiny"))
    return list(old.tickets.values())


def reopened_desk(policy: Policy, tickets: list[Ticket]) -> tuple[Desk, Recorded]:
    recorded = Recorded()
    loads = {"t1": 1, "t2": 1}
    board = board_from(policy, {a: (False, 100) for a in ("l1", "l2")}, loads, {})
    found = {t.ticket_id: t for t in tickets}
    return Desk(policy, "v2", T0, board, recorded, tickets=found), recorded


def test_retired_groups_tickets_are_rerouted_to_moved_to_with_the_reason() -> None:
    policy = without_tiny({"tiny": "least"})
    tickets = tickets_in_tiny()
    assert [(t.status, t.agent_id) for t in tickets] == [
        ("assigned", "t1"),
        ("assigned", "t2"),
        ("queued", None),
    ]
    d, recorded = reopened_desk(policy, tickets)
    d.move_retired(tickets)
    moves = recorded.events(TicketReassigned)
    assert [(m.from_group, m.to_group, m.actor) for m in moves] == [("tiny", "least", "system")] * 3
    assert moves[0].reason == "group tiny retired by policy v2: moved to least"
    assert moves[0].from_agent == "t1"
    # In least, l1 and l2 are off shift, l3 is free, t1 and t2 (moved there too) are full until
    # their own tickets leave them: least-loaded routing hands the tickets round.
    assigned = [(e.number[-1], e.group_id, e.agent_id) for e in recorded.events(TicketAssigned)]
    assert assigned == [("1", "least", "l3"), ("2", "least", "t1"), ("3", "least", "t2")]
    assert not recorded.events(TicketQueued)
    assert {t.group_id for t in tickets} == {"least"}


def test_a_group_dropped_without_moved_to_fails_nothing_that_names_it() -> None:
    policy = without_tiny(None)
    tickets = tickets_in_tiny()
    d, recorded = reopened_desk(policy, tickets)
    assigned = tickets[0]

    def raised(level: int) -> EscalationRaised:
        return EscalationRaised(
            ticket_id=assigned.ticket_id,
            number=assigned.number,
            metric="first_response",
            level=level,
            clock_id="clock",
            breached_at=datetime(2026, 1, 1, tzinfo=UTC),
            cause_event_id=f"breach-{level}",
            policy_version="v",
        )

    d.escalation(raised(1), "event-1")  # notify only: today's KeyError on the group's supervisors
    d.escalation(raised(2), "event-2")
    escalated = recorded.events(TicketEscalated)
    assert [(e.level, e.from_group, e.to_group) for e in escalated] == [
        (1, "tiny", None),
        (2, "tiny", "supervisors"),
    ]
    assert escalated[0].supervisors == ["boss"], "the default group's supervisors stand in"
    assert assigned.group_id == "supervisors"

    d.move_retired(tickets)  # the other two: to the default group, and why
    moves = [m for m in recorded.events(TicketReassigned) if m.from_group == "tiny"]
    assert [m.to_group for m in moves] == ["front", "front"]
    assert moves[0].reason == "group tiny is not in policy v2: default group front"


def test_retired_groups_are_validated() -> None:
    with pytest.raises(PolicyError, match="moved_to 'nowhere' is no group"):
        without_tiny({"tiny": "nowhere"})
    with pytest.raises(PolicyError, match="group ids must be unique"):
        without_tiny({"least": "round"})

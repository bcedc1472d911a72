"""A policy version that removes a group: its tickets move, nothing that names it fails (pure)."""

from __future__ import annotations

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
from shared.policyfile import PolicyError
from tests.dispatch.support import POLICY_FILE, T0, desk, triaged
from tests.dispatch.test_desk import command
from tests.support.events import escalation
from tests.support.policies import parsed, without_groups
from tests.support.recorded import Recorded

pytestmark = pytest.mark.unit


def without_tiny(retire: dict[str, str] | None) -> Policy:
    """The test policy with group ``tiny`` removed (its agents moved to ``least``)."""
    document: dict[str, Any] = yaml.safe_load(POLICY_FILE.read_text())
    without_groups(document, retire or {"tiny": "least"}, retire=retire is not None)
    return parsed(document)


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

    for level in (1, 2):  # level 1 notifies: it was a KeyError on the group's supervisors
        d.escalation(escalation(assigned.ticket_id, assigned.number, level), f"event-{level}")
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


def test_a_retired_groups_tickets_answer_to_the_supervisors_of_the_group_that_took_them() -> None:
    """Before the switch moves it, a ticket still names its retired group: who supervises it is
    decided by where it goes (boss supervised tiny; dir supervises directors, which took it)."""
    policy = without_tiny({"tiny": "directors"})
    tickets = tickets_in_tiny()
    d, recorded = reopened_desk(policy, tickets)
    assert tickets[0].group_id == "tiny"
    correct = {"complexity": "complex", "reason": "needs the supervisors"}
    refused = d.command(command("reclassify", "boss", **correct))
    assert refused is not None and refused.reason == "not_permitted"
    assert d.command(command("reclassify", "dir", **correct)) is None
    [moved] = recorded.events(TicketReassigned)
    assert (moved.from_group, moved.to_group, moved.actor) == ("tiny", "supervisors", "dir")


def test_retired_groups_are_validated() -> None:
    with pytest.raises(PolicyError, match="moved_to 'nowhere' is no group"):
        without_tiny({"tiny": "nowhere"})
    document: dict[str, Any] = yaml.safe_load(POLICY_FILE.read_text())
    without_groups(document, {"tiny": "least"}, retire=True)
    document["directory"]["retired_groups"].append({"id": "least", "moved_to": "round"})
    with pytest.raises(PolicyError, match="group ids must be unique"):
        parsed(document)

"""The groups a message may change cover everything the desk does with it: a desk holding only
those groups never reaches past them (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from services.dispatch import reach
from services.dispatch.commands import SetCapacity
from services.dispatch.desk import OutOfReach
from tests.dispatch.support import POLICY, triaged
from tests.dispatch.test_desk import NUMBER, command, fresh, run
from tests.support.events import escalation

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("resolve", {}),
        ("reassign", {"to_agent": "f2"}),
        ("reassign", {"to_group": "tiny", "to_agent": None, "actor": "boss"}),
        ("escalate", {"actor": "boss"}),
        ("escalate", {"reason": "beyond my permissions"}),
        ("flag_customer", {"reason": "abusive"}),
        ("request_specialist", {"to_group": "tiny", "question": "is the board faulty?"}),
        ("reclassify", {"complexity": "complex", "actor": "boss", "reason": "worse"}),
    ],
)
def test_a_ticket_command_stays_within_the_groups_it_reaches(kind: str, fields: Any) -> None:
    d, _, ticket = fresh()
    run(d, ("accept", "f1"), ("start_work", "f1"))
    message = command(kind, fields.pop("actor", "f1"), **fields)
    d.held = reach.of_command(POLICY, message, ticket)
    assert d.command(message) is None, kind  # applied, and no OutOfReach raised


def test_an_escalation_and_a_triaged_ticket_stay_within_their_groups() -> None:
    d, _, ticket = fresh()
    raised = escalation(ticket.ticket_id, NUMBER, 2)
    d.held = reach.of_event(POLICY, raised, ticket)
    d.escalation(raised, "e-1")
    assert ticket.group_id == "supervisors"

    new = triaged(2, product_line="tiny")
    d.held = reach.of_event(POLICY, new, None)
    assert d.held == {"tiny"}
    d.classify(new)


def test_an_agent_command_serves_only_the_agents_groups() -> None:
    d, _, _ = fresh()
    message = SetCapacity(
        command_id="cap", type="set_capacity", agent_id="t3", actor="boss", capacity=3
    )
    d.held = reach.of_command(POLICY, message, None)
    assert d.held == {"tiny"}
    assert d.agent_command(message) is None


def test_routing_outside_what_the_batch_holds_is_refused_loudly() -> None:
    d, _, _ = fresh()
    d.held = {"front"}
    with pytest.raises(OutOfReach):
        d.classify(triaged(2, product_line="tiny"))

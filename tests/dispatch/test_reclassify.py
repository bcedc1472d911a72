"""Reclassifying a ticket: triage corrected, routing takes it where its class belongs (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from services.dispatch.events import (
    TicketAssigned,
    TicketReassigned,
    TicketReclassified,
)
from tests.dispatch.support import desk, triaged
from tests.dispatch.test_desk import NUMBER, command, run

pytestmark = pytest.mark.unit


def simple_printer_ticket() -> tuple[Any, Any, Any]:
    """A printer fault triaged as a simple inquiry: front line, agent f1."""
    d, recorded = desk()
    d.classify(triaged(1, complexity="simple", category="inquiry", product_line="printer"))
    ticket = d.by_number(NUMBER)
    assert ticket is not None and (ticket.group_id, ticket.agent_id) == ("front", "f1")
    return d, recorded, ticket


def test_the_assignee_reclassifies_and_the_ticket_moves_where_its_class_goes() -> None:
    d, recorded, ticket = simple_printer_ticket()
    run(d, ("accept", "f1"))
    refusal = d.command(
        command("reclassify", "f1", complexity="general", reason="jams, no question")
    )
    assert refusal is None
    [corrected] = recorded.events(TicketReclassified)
    assert (corrected.from_complexity, corrected.to_complexity) == ("simple", "general")
    assert (corrected.from_category, corrected.to_category) == ("inquiry", "fault")
    assert (corrected.from_group, corrected.to_group, corrected.actor) == ("front", "skilled", "f1")
    [moved] = recorded.events(TicketReassigned)
    assert (moved.from_agent, moved.to_group) == ("f1", "skilled")
    assert moved.reason.startswith(
        "reclassified as general fault (matrix row printer/* -> skilled)"
    )
    assigned = recorded.events(TicketAssigned)[-1]
    assert (assigned.group_id, assigned.agent_id, assigned.cause) == (
        "skilled",
        "s.printer",
        "reassigned",
    )
    assert (ticket.complexity, ticket.category, ticket.status) == ("general", "fault", "assigned")
    assert d.board.agents["f1"].load == 0


def test_a_complaint_reclassified_as_major_goes_to_the_directors() -> None:
    d, recorded, ticket = simple_printer_ticket()
    major = {"category": "complaint", "complaint_severity": "major"}
    assert d.command(command("reclassify", "boss", reason="threatens to sue", **major)) is None
    [corrected] = recorded.events(TicketReclassified)
    assert (corrected.to_category, corrected.complaint_severity) == ("complaint", "major")
    assert corrected.to_complexity == "complex"  # the triage policy's major complaints
    assert (ticket.group_id, ticket.agent_id) == ("directors", "dir")


def test_a_correction_within_the_group_changes_the_class_only() -> None:
    d, recorded, ticket = simple_printer_ticket()
    # An ordinary complaint goes to the front line too (the test policy's complaints.ordinary).
    assert d.command(command("reclassify", "f1", category="complaint", reason="angry")) is None
    assert recorded.events(TicketReassigned) == []
    assert (ticket.category, ticket.group_id, ticket.agent_id) == ("complaint", "front", "f1")


@pytest.mark.parametrize(
    ("actor", "fields", "steps", "reason"),
    [
        ("f2", {"complexity": "general"}, (), "not_permitted"),
        ("customer", {"complexity": "general"}, (), "not_permitted"),
        ("f1", {"complexity": "simple"}, (), "illegal_transition"),
        ("f1", {"complexity": "simple", "category": "fault"}, (), "invalid_command"),
        ("f1", {"complexity": "general"},
         (("accept", "f1"), ("start_work", "f1"), ("resolve", "f1"), ("close", "f1")),
         "illegal_transition"),
    ],
)  # fmt: skip
def test_refused_reclassifications_change_nothing(
    actor: str, fields: dict[str, str], steps: tuple[tuple[str, str], ...], reason: str
) -> None:
    d, recorded, ticket = simple_printer_ticket()
    run(d, *steps)
    before = (ticket.complexity, ticket.category, ticket.group_id, ticket.version)
    refusal = d.command(command("reclassify", actor, reason="wrong", **fields))
    assert refusal is not None and refusal.reason == reason
    assert (ticket.complexity, ticket.category, ticket.group_id, ticket.version) == before
    assert recorded.events(TicketReclassified) == []


def test_a_reclassify_command_needs_something_to_correct() -> None:
    with pytest.raises(ValueError, match="needs complexity or category"):
        command("reclassify", "f1", reason="?")
    with pytest.raises(ValueError, match="goes with category complaint"):
        command("reclassify", "f1", complexity="general", complaint_severity="major", reason="?")

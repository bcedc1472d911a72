"""Who sees what in the console, from the policy's directory; what a command must look like
before the console sends it. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.console.courier import Invalid, command_schema, shape
from services.console.visibility import NotAPerson, viewer
from services.policy import DEFAULT_POLICY, Policy
from shared.credentials import Credential
from shared.policyfile import load_policy

pytestmark = pytest.mark.unit

POLICY, _ = load_policy(Path(DEFAULT_POLICY), Policy)
NOW = datetime(2026, 11, 20, 8, tzinfo=UTC)


def credential(subject: str, ticket: str | None = None) -> Credential:
    return Credential(
        subject=subject,
        issuer="desk",
        kid="k",
        issued_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        token_id="t",
        ticket=ticket,
    )


def test_operators_and_directors_see_everything_agents_their_groups_and_own() -> None:
    assert viewer(credential("ops"), POLICY).sees_everything
    assert viewer(credential("sun.yu"), POLICY).sees_everything
    agent = viewer(credential("li.na"), POLICY)
    assert (agent.role, agent.groups) == ("agent", frozenset({"front-line"}))
    assert agent.sees_ticket("front-line", None) and agent.sees_ticket("printing", "li.na")
    assert not agent.sees_ticket("printing", "zhou.min") and not agent.sees_ticket(None, None)
    assert agent.sees_agent("wang.qiang", ["front-line"])
    assert not agent.sees_agent("zhou.min", ["printing"])
    assert not agent.supervises


def test_a_group_sees_the_tickets_still_naming_a_group_retired_into_it() -> None:
    document = POLICY.model_dump(mode="json")
    document["directory"]["retired_groups"] = [{"id": "old-desk", "moved_to": "front-line"}]
    retired = Policy.model_validate(document)
    agent = viewer(credential("li.na"), retired)
    assert agent.sees_ticket("old-desk", None) and agent.sees_ticket("front-line", None)
    assert not viewer(credential("zhou.min"), retired).sees_ticket("old-desk", None)


def test_a_group_asked_for_findings_sees_the_ticket_and_a_third_group_does_not() -> None:
    """Until it answers: the ticket's specialist request waits on its group."""
    network = viewer(credential("wu.hao"), POLICY)
    assert not network.sees_ticket("front-line", "li.na")
    assert network.sees_ticket("front-line", "li.na", "network")
    assert viewer(credential("qian.hui"), POLICY).sees_ticket("front-line", None, "network")
    assert not viewer(credential("zhou.min"), POLICY).sees_ticket("front-line", None, "network")
    # Still the owner's and their group's, whoever was asked.
    assert viewer(credential("li.na"), POLICY).sees_ticket("front-line", "li.na", "network")


def test_a_supervisor_sees_the_groups_they_supervise() -> None:
    supervisor = viewer(credential("zhao.lei"), POLICY)
    assert supervisor.role == "supervisor" and supervisor.supervises
    assert supervisor.groups == frozenset({"front-line", "customer-care", "supervisors"})
    assert not supervisor.sees_ticket("printing", None)
    everywhere = POLICY.model_copy(
        update={
            "directory": POLICY.directory.model_copy(update={"supervisor_scope": "every_group"})
        }
    )
    assert viewer(credential("zhao.lei"), everywhere).sees_everything


def test_customers_system_and_strangers_see_nothing() -> None:
    for who in (credential("customer", ticket="REQ-2026-000001"), credential("system")):
        with pytest.raises(NotAPerson):
            viewer(who, POLICY)
    with pytest.raises(NotAPerson, match="not in the policy's directory"):
        viewer(credential("mallory"), POLICY)


def test_a_command_takes_its_target_from_the_path_and_keeps_dispatchs_shape() -> None:
    command = shape("ticket", "REQ-2026-000001", {"type": "respond", "message": " Hi "}, "li.na")
    assert command["ticket_number"] == "REQ-2026-000001" and command["message"] == "Hi"
    assert len(command["command_id"]) == 36
    given = shape("agent", "li.na", {"type": "go_off_shift", "command_id": "c-1"}, "li.na")
    assert (given["agent_id"], given["command_id"]) == ("li.na", "c-1")
    problems: dict[str, dict[str, Any]] = {
        "unknown type": {"type": "delete"},
        "missing field": {"type": "respond"},
        "another ticket": {"type": "accept", "ticket_number": "REQ-2026-000002"},
        "another actor": {"type": "accept", "actor": "sun.yu"},
        "a score out of range": {"type": "record_satisfaction", "score": 9},
    }
    for case, body in problems.items():
        with pytest.raises(Invalid):
            shape("ticket", "REQ-2026-000001", body, "li.na")
        assert case
    schema = command_schema("ticket")
    resolve = schema["$defs"]["Resolve"]
    assert "ticket_number" not in resolve["required"] and "resolution" in resolve["required"]

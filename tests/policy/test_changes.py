"""What a policy change does, before it is made (pure): differences and refusals."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.policy import Policy
from services.policy.changes import removals, sections, sign_off_refusals
from tests.support.policies import parsed, shipped, without_groups

pytestmark = pytest.mark.unit


def policy(change: Any = None) -> Policy:
    document = shipped()
    if change:
        change(document)
    return parsed(document)


def drop_printing(document: dict[str, Any], moved_to: str | None = None) -> None:
    without_groups(document, {"printing": moved_to or "network"}, retire=moved_to is not None)


def test_a_tighter_target_a_make_up_day_and_a_moved_group_are_listed() -> None:
    def change(document: dict[str, Any]) -> None:
        for rule in document["sla"]["targets"]:
            if rule.get("name") == "simple response":
                rule["target"] = "20m"
        document["sla"]["calendars"]["office"]["make_up_days"].append("2027-02-20")
        drop_printing(document, "network")

    found = {s.title: s.lines for s in sections(policy(), policy(change))}
    assert found["sla targets"][0].startswith("target simple response: first_response 30m on")
    assert "20m on office" in found["sla targets"][0]
    assert found["sla targets"][-1].startswith("running clocks keep the terms they started with")
    assert found["calendars"] == ["calendar office: make_up_days + 2027-02-20"]
    assert "group printing removed, its tickets move to network" in found["groups and agents"]
    assert "matrix printer/*: printing -> -" in found["routing"]
    assert "triage rules" not in found


def test_removing_a_group_is_refused_while_it_holds_tickets_or_the_ladder_names_it() -> None:
    queued = {"printing": Counter({"queued": 2})}
    [stranded] = removals(policy(), policy(drop_printing), queued)
    assert stranded.refused is not None and "it holds open tickets (2 queued)" in stranded.refused
    [empty] = removals(policy(), policy(drop_printing), {})
    assert empty.refused is None, "a group with no tickets may simply go"
    [mapped] = removals(policy(), policy(lambda d: drop_printing(d, "network")), queued)
    assert (mapped.refused, mapped.moved_to) == (None, "network")

    def drop_supervisors(document: dict[str, Any]) -> None:
        without_groups(document, {"supervisors": "experts"})

    [on_ladder] = removals(policy(), policy(drop_supervisors), {})
    assert on_ladder.refused is not None and "escalation level 2 names it" in on_ladder.refused


NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def signed(approved_by: str | None, effective_from: datetime | None) -> Policy:
    def change(document: dict[str, Any]) -> None:
        if approved_by is not None:
            document["approved_by"] = approved_by
        if effective_from is not None:
            document["effective_from"] = effective_from.isoformat()

    return policy(change)


def test_a_version_is_applied_only_signed_off_by_a_head_and_dated_from_now_on() -> None:
    """sop.md: an explicit effective date, and sign-off by the responsible head."""
    tomorrow = NOW + timedelta(days=1)
    in_force = policy()
    for approver in ("孙宇", "sun.yu", "钱慧"):  # a director and a supervisor, by name or id
        assert sign_off_refusals(in_force, signed(approver, tomorrow), NOW) == []
    assert sign_off_refusals(in_force, signed("孙宇", NOW - timedelta(minutes=2)), NOW) == []

    def refused(proposed: Policy) -> str:
        return " / ".join(sign_off_refusals(in_force, proposed, NOW))

    assert refused(signed(None, tomorrow)) == (
        "approved_by is missing: a version is signed off by a supervisor or director"
    )
    assert "no supervisor or director" in refused(signed("li.na", tomorrow)), "an agent"
    assert "no supervisor or director" in refused(signed("Mallory", tomorrow))
    assert refused(signed("孙宇", None)).startswith("effective_from is missing")
    assert "is in the past" in refused(signed("孙宇", NOW - timedelta(days=3))), "backdated"


def test_every_other_change_is_listed_by_its_path_so_nothing_changes_unseen() -> None:
    """An approver signs off what a version changes: a quiet period, a metric's terms, a
    notice's wording or a rule showed nowhere in the diff before."""

    def change(document: dict[str, Any]) -> None:
        document["routing"]["resolve_unanswered_after"] = "5d"
        document["sla"]["metrics"]["customer_update"]["repeats"] = False
        document["sla"]["warnings"] = [0.8, 0.9]
        document["notifications"]["templates"]["closure"]["en"]["subject"] = "Closed: {{ number }}"
        rules = document["notifications"]["rules"]
        rules.append({**rules[0], "channels": ["sms"]})
        for rule in document["sla"]["targets"]:
            if rule.get("name") == "simple response":
                rule["target"] = "20m"

    [others] = [s.lines for s in sections(policy(), policy(change)) if s.title == "everything else"]
    assert "routing.resolve_unanswered_after: 7d -> 5d" in others
    assert "sla.metrics.customer_update.repeats: True -> False" in others
    assert "sla.warnings: [0.75, 0.9] -> [0.8, 0.9]" in others
    assert "notifications.templates.closure.en.subject: " in "\n".join(others)
    assert any(line.startswith("notifications.rules + ") and "'sms'" in line for line in others)
    assert not [line for line in others if line.startswith("sla.targets")], "its own section"
    # A template changed past its first 160 characters shows where; a rule changed in one field
    # shows which; an agent's role shows (the groups section names only groups and members).

    def deeper(document: dict[str, Any]) -> None:
        closure = document["notifications"]["templates"]["closure"]["en"]
        closure["body"] = closure["body"] + " Thank you."
        rule = document["notifications"]["rules"][0]
        rule["channels"] = [*reversed(rule["channels"])]
        for agent in document["directory"]["agents"]:
            if agent["id"] == "li.na":
                agent["role"] = "supervisor"

    [deep] = [s.lines for s in sections(policy(), policy(deeper)) if s.title == "everything else"]
    [body] = [line for line in deep if line.startswith("notifications.templates.closure.en.body")]
    assert "Thank you." in body
    assert any(line.startswith("notifications.rules.0.channels: ") for line in deep), deep
    assert any(
        line.startswith("directory.agents.") and line.endswith("role: agent -> supervisor")
        for line in deep
    ), deep
    assert [s.title for s in sections(policy(), policy())] == ["version"], "nothing changed"

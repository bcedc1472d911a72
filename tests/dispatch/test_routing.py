"""Classification and the routing strategies (pure: no I/O)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from services.dispatch.events import TicketAssigned, TicketQueued
from services.dispatch.routing import classify, escalation_group
from services.policy import DEFAULT_POLICY, Policy
from shared.policyfile import load_policy
from tests.dispatch.support import POLICY, desk, triaged

pytestmark = pytest.mark.unit

DEFAULT, _ = load_policy(DEFAULT_POLICY, Policy)


@pytest.mark.parametrize(
    ("complexity", "severity", "product_line", "problem_type", "group", "route"),
    [
        ("simple", "none", None, None, "front-line", "complexity:simple"),
        ("general", "none", "pc", "hardware", "pc-hardware", "matrix:pc/*"),
        ("general", "none", "printer", None, "printing", "matrix:printer/*"),
        ("general", "none", None, "software", "business-systems", "matrix:*/software"),
        ("general", "none", "fax", "paper", "front-line", "matrix:default"),
        ("complex", "none", "erp", None, "experts", "complexity:complex"),
        ("general", "ordinary", None, None, "customer-care", "complaint:ordinary"),
        ("simple", "major", None, None, "directors", "complaint:major"),
    ],
)
def test_the_default_policy_classifies_as_the_sop_says(
    complexity: str,
    severity: str,
    product_line: str | None,
    problem_type: str | None,
    group: str,
    route: str,
) -> None:
    result = classify(
        DEFAULT.routing,
        complexity=complexity,  # type: ignore[arg-type]
        complaint_severity=severity,  # type: ignore[arg-type]
        product_line=product_line,
        problem_type=problem_type,
    )
    assert (result.group_id, result.route) == (group, route)
    if route == "matrix:default":
        assert "no matrix row for fax/paper" in result.reason


def assignments(product_line: str, count: int, **changes: object) -> tuple[list[str], object]:
    d, recorded = desk()
    for n in range(count):
        d.classify(triaged(n, product_line=product_line, **changes))
    return [e.agent_id for e in recorded.events(TicketAssigned)], d


def test_round_robin_cycles_through_the_group_over_100_tickets() -> None:
    agents, _ = assignments("rr", 100)
    assert agents[:6] == ["r1", "r2", "r3", "r1", "r2", "r3"]
    assert Counter(agents) == {"r1": 34, "r2": 33, "r3": 33}
    assert all(agents[i] != agents[i + 1] for i in range(99))


def test_least_loaded_fills_the_lightest_agent_first_over_100_tickets() -> None:
    d, recorded = desk(loads={"l1": 40, "l2": 10, "l3": 0})
    for n in range(100):
        d.classify(triaged(n, product_line="ll"))
    given = Counter(e.agent_id for e in recorded.events(TicketAssigned))
    final = {a: d.board.agents[a].load for a in ("l1", "l2", "l3")}
    assert given == {"l1": 10, "l2": 40, "l3": 50}
    assert final == {"l1": 50, "l2": 50, "l3": 50}


def test_skills_and_language_pick_the_matching_agent_over_100_tickets() -> None:
    d, recorded = desk()
    for n in range(100):
        line = ("printer", "pc")[n % 2]
        d.classify(triaged(n, product_line=line))
    by_line = {e.number: e.agent_id for e in recorded.events(TicketAssigned)}
    assert all(by_line[f"REQ-2026-{n:06d}"] == ("s.printer", "s.pc")[n % 2] for n in range(100))
    english, en_recorded = desk()
    english.classify(triaged(1, product_line="pc", language="en"))
    [assigned] = en_recorded.events(TicketAssigned)
    assert assigned.agent_id == "s.any", "only s.any speaks English"
    assert "speaks en" in assigned.reason


def test_capacity_is_never_exceeded_and_the_rest_is_queued() -> None:
    d, recorded = desk()
    for n in range(6):
        d.classify(triaged(n, product_line="tiny"))
    assert [e.agent_id for e in recorded.events(TicketAssigned)] == ["t1", "t2"]
    queued = recorded.events(TicketQueued)
    assert len(queued) == 4
    assert all("nobody in tiny is on shift with room" in q.reason for q in queued)
    for agent in d.board.agents.values():
        assert agent.load <= agent.capacity


def test_the_queue_is_served_by_priority_then_age_when_an_agent_comes_on_shift() -> None:
    from services.dispatch.commands import GoOnShift, SetCapacity

    d, recorded = desk()
    d.classify(triaged(1, product_line="tiny"))  # t1
    d.classify(triaged(2, product_line="tiny"))  # t2
    for n, priority in ((3, "low"), (4, "urgent"), (5, "normal"), (6, "urgent"), (7, "high")):
        d.now += timedelta(minutes=1)
        d.classify(triaged(n, product_line="tiny", priority=priority))
    recorded.records.clear()
    assert (
        d.agent_command(GoOnShift(type="go_on_shift", command_id="c1", agent_id="t3", actor="t3"))
        is None
    )
    assert (
        d.agent_command(
            SetCapacity(
                type="set_capacity", command_id="c2", agent_id="t3", actor="boss", capacity=4
            )
        )
        is None
    )
    order = [e.number for e in recorded.events(TicketAssigned)]
    assert order == ["REQ-2026-000004", "REQ-2026-000006", "REQ-2026-000007", "REQ-2026-000005"]
    assert d.board.agents["t3"].load == 4 == d.board.agents["t3"].capacity
    assert POLICY.directory.agent["t3"].on_shift is False


@pytest.mark.parametrize(
    ("holding", "level", "moved_to"),
    [
        ("front", 1, None),  # level 1 names no group: notify only
        ("front", 2, "supervisors"),
        ("front", 3, "directors"),
        ("supervisors", 2, None),  # already on that rung
        ("supervisors", 3, "directors"),
        ("directors", 2, None),  # never down the ladder
        ("directors", 3, None),
        ("tiny", 9, None),  # a level the ladder does not have
    ],
)
def test_the_ladder_never_hands_a_ticket_to_a_lower_rung(
    holding: str, level: int, moved_to: str | None
) -> None:
    assert escalation_group(POLICY.routing.escalation, level, holding) == moved_to


def test_an_agent_may_lower_their_capacity_but_only_a_supervisor_raise_it_past_the_directory() -> (
    None
):
    """An agent who set themselves a capacity of 100,000 took their groups' whole queue."""
    from services.dispatch.commands import SetCapacity

    d, recorded = desk()
    for n in range(1, 6):
        d.classify(triaged(n, product_line="tiny"))  # t1, t2 full; three queued
    recorded.records.clear()

    def capacity(actor: str, value: int) -> str | None:
        refusal = d.agent_command(
            SetCapacity(
                type="set_capacity", command_id=f"{actor}-{value}", agent_id="t2", actor=actor,
                capacity=value,
            )
        )  # fmt: skip
        return refusal.reason if refusal else None

    ceiling = POLICY.directory.agent["t2"].capacity
    assert capacity("t2", 100_000) == "not_permitted"
    assert capacity("t2", ceiling + 1) == "not_permitted"
    assert recorded.events(TicketAssigned) == []  # nothing drained onto t2
    assert capacity("t2", 0) is None  # less is theirs to say
    assert capacity("t2", ceiling) is None
    assert capacity("boss", ceiling + 2) is None  # more is a supervisor's
    assert d.board.agents["t2"].capacity == ceiling + 2
    assert len(recorded.events(TicketAssigned)) == 2

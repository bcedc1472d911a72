"""Which group a ticket belongs to, and which agent of the group gets it. Pure.

:func:`classify` applies the policy's routing section: complaints by their own rule, then the
complexity (simple -> front line, complex -> experts), and for general faults the
classification matrix, product line x problem type, first matching row, else the default
group with the reason recorded.

A :class:`Board` is the directory at one moment: every agent's shift, capacity and load, and each
group's round-robin cursor. :meth:`Board.choose` picks an agent by the group's strategy:
``skills`` narrows the candidates to those who speak the ticket's language and share most of its
tags; then ``round_robin`` (the next agent after the last one chosen) or ``least_loaded`` (fewest
open tickets, round-robin among equals) orders them. Nobody on shift with room: no agent, and
the caller queues the ticket.

:func:`escalation_group` is where an escalation takes a ticket: up the ladder, never down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from services.policy import Policy
from services.policy.dispatch import (
    AgentPolicy,
    DirectoryPolicy,
    EscalationLevel,
    GroupPolicy,
    RoutingPolicy,
)
from services.vocabulary import ComplaintSeverity, Complexity


def escalation_group(ladder: Sequence[EscalationLevel], level: int, holding: str) -> str | None:
    """The group an escalation to ``level`` hands the ticket to, or None when it stays where it
    is (the escalation is then recorded and notified, nobody else takes the ticket).

    A ladder never hands a ticket to a lower rung than the one holding it: a major complaint
    routed straight to a director stays with the director at levels 2 and 3. A group's rung is
    the highest level naming it; a group the ladder does not name is below every rung.
    """
    target = next((step.group for step in ladder if step.level == level), None)
    if target is None:
        return None
    rung = {step.group: step.level for step in ladder if step.group}
    return target if rung[target] > rung.get(holding, 0) else None


def group_for(policy: Policy, group_id: str) -> str:
    """The group a ticket of ``group_id`` belongs to under ``policy``: the group itself, where a
    retired group moved to, or — for a group this version does not know at all — the default
    group. No policy version can make routing fail on a stored group."""
    return policy.directory.home(group_id) or policy.routing.default_group


@dataclass(frozen=True)
class Route:
    group_id: str
    route: str
    reason: str


def classify(
    routing: RoutingPolicy,
    *,
    complexity: Complexity,
    complaint_severity: ComplaintSeverity,
    product_line: str | None,
    problem_type: str | None,
) -> Route:
    if complaint_severity == "major":
        return Route(routing.complaints.major, "complaint:major", "major complaint: a director")
    if complaint_severity == "ordinary":
        return Route(
            routing.complaints.ordinary, "complaint:ordinary", "complaint: customer service"
        )
    target = routing.by_complexity.get(complexity, "matrix")
    if target != "matrix":
        return Route(target, f"complexity:{complexity}", f"{complexity} problems go to {target}")
    for row in routing.matrix:
        if row.matches(product_line, problem_type):
            cell = f"{row.product_line}/{row.problem_type}"
            return Route(row.group, f"matrix:{cell}", f"matrix row {cell} -> {row.group}")
    wanted = f"{product_line or '-'}/{problem_type or '-'}"
    return Route(
        routing.default_group,
        "matrix:default",
        f"no matrix row for {wanted}; default group {routing.default_group}",
    )


@dataclass
class AgentOnBoard:
    """An agent as routing sees them now."""

    profile: AgentPolicy
    on_shift: bool
    capacity: int
    load: int = 0

    @property
    def id(self) -> str:
        return self.profile.id

    @property
    def has_room(self) -> bool:
        return self.on_shift and self.load < self.capacity


@dataclass(frozen=True)
class Choice:
    agent_id: str | None
    strategy: str
    reason: str


@dataclass
class Board:
    directory: DirectoryPolicy
    agents: dict[str, AgentOnBoard]
    cursors: dict[str, str] = field(default_factory=dict)
    """Group -> the agent most recently chosen in it (round robin continues after them)."""

    def members(self, group_id: str) -> list[AgentOnBoard]:
        return sorted(
            (a for a in self.agents.values() if group_id in a.profile.groups), key=lambda a: a.id
        )

    def choose(
        self,
        group_id: str,
        *,
        language: str,
        tags: set[str],
        only: str | None = None,
    ) -> Choice:
        """The agent of ``group_id`` who should get a ticket, or why there is none."""
        group = self.directory.group[group_id]
        strategy = "+".join(group.strategy)
        candidates = [a for a in self.members(group_id) if a.has_room]
        if only is not None:
            candidates = [a for a in candidates if a.id == only]
        if not candidates:
            return Choice(None, strategy, f"nobody in {group_id} is on shift with room")
        notes: list[str] = []
        if "skills" in group.strategy:
            candidates, notes = _by_skills(candidates, language, tags)
        chosen = self._order(group, candidates)
        self.cursors[group_id] = chosen.id
        notes.append(f"{chosen.load}/{chosen.capacity} open")
        return Choice(chosen.id, strategy, "; ".join(notes))

    def _order(self, group: GroupPolicy, candidates: list[AgentOnBoard]) -> AgentOnBoard:
        ring = self._after_cursor(group.id, candidates)
        if "least_loaded" in group.strategy:
            return min(ring, key=lambda a: a.load)  # min keeps the first of equals: round robin
        return ring[0]

    def _after_cursor(self, group_id: str, candidates: list[AgentOnBoard]) -> list[AgentOnBoard]:
        """Candidates in id order, starting after the group's last choice."""
        cursor = self.cursors.get(group_id)
        if cursor is None:
            return candidates
        later = [a for a in candidates if a.id > cursor]
        return later + [a for a in candidates if a.id <= cursor]

    def room(self, group_id: str) -> int:
        """Tickets the group's agents on shift can take now, together."""
        return sum(
            max(0, a.capacity - a.load)
            for a in self.agents.values()
            if a.on_shift and group_id in a.profile.groups
        )

    def take(self, agent_id: str) -> None:
        self.agents[agent_id].load += 1

    def release(self, agent_id: str | None) -> None:
        if agent_id is not None and agent_id in self.agents:
            self.agents[agent_id].load = max(0, self.agents[agent_id].load - 1)


def _by_skills(
    candidates: list[AgentOnBoard], language: str, tags: set[str]
) -> tuple[list[AgentOnBoard], list[str]]:
    notes = []
    speakers = [a for a in candidates if language in a.profile.languages]
    if speakers:
        candidates = speakers
        notes.append(f"speaks {language}")
    else:
        notes.append(f"nobody with room speaks {language}")
    if tags:
        scored = [(len(tags & set(a.profile.skills)), a) for a in candidates]
        best = max(score for score, _ in scored)
        if best > 0:
            candidates = [a for score, a in scored if score == best]
            matched = sorted(tags & set(candidates[0].profile.skills))
            notes.append(f"skilled in {', '.join(matched)}")
        else:
            notes.append(f"nobody with room is skilled in {', '.join(sorted(tags))}")
    return candidates, notes

"""Policy sections of dispatch: who the people are (``directory``), who gets what (``routing``)."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.policy.notify import Mailbox, WebAddress
from services.vocabulary import Category, Complexity
from shared.durations import Duration

GroupKind = Literal["front_line", "specialist", "supervisors", "experts", "directors"]
Role = Literal["agent", "supervisor", "expert", "director"]
Strategy = Literal["round_robin", "least_loaded", "skills"]
ResolutionField = Literal["cause", "actions", "compensation"]
_SLUG = r"^[a-z0-9][a-z0-9_.-]*$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GroupPolicy(_Section):
    id: str = Field(pattern=_SLUG)
    name: str
    kind: GroupKind
    strategy: list[Strategy] = Field(
        default=["skills", "least_loaded"],
        min_length=1,
        description="skills filters by skill and language; then round_robin or least_loaded "
        "picks among the rest.",
    )
    supervisors: list[str] = Field(
        default=[],
        description="Agents told about this group's escalations; an escalate or flag_customer "
        "command hands the ticket to the first of them with room (else the first).",
    )

    @model_validator(mode="after")
    def _one_order(self) -> GroupPolicy:
        if {"round_robin", "least_loaded"} <= set(self.strategy):
            raise ValueError("round_robin and least_loaded both order candidates: pick one")
        return self


class AgentPolicy(_Section):
    id: str = Field(pattern=_SLUG)
    name: str
    role: Role = "agent"
    groups: list[str] = Field(min_length=1)
    skills: list[str] = []
    languages: list[str] = Field(default=["zh"], min_length=1)
    capacity: int = Field(default=5, ge=0, le=100_000, description="Open tickets at most.")
    on_shift: bool = Field(default=True, description="At start, before any shift command.")
    email: Mailbox | None = None
    phone: str | None = None
    webhook_url: WebAddress | None = None

    @property
    def supervises(self) -> bool:
        return self.role in ("supervisor", "director")


class RetiredGroup(_Section):
    """A group that no longer exists, and where its tickets went."""

    id: str = Field(pattern=_SLUG)
    moved_to: str = Field(
        description="The group its open and queued tickets are re-routed to when this version "
        "comes into force, and that stands in for it wherever a ticket still names it."
    )


class OperatorPolicy(_Section):
    """Someone who watches the whole desk (the console's dashboard) and handles no ticket."""

    id: str = Field(pattern=_SLUG)
    name: str


class DirectoryPolicy(_Section):
    groups: list[GroupPolicy] = Field(min_length=1)
    agents: list[AgentPolicy] = []
    operators: list[OperatorPolicy] = Field(
        default=[], description="People who see every ticket and agent in the console."
    )
    supervisor_scope: Literal["own_groups", "every_group"] = Field(
        default="own_groups",
        description="own_groups: an agent supervises the tickets and agents of the groups that "
        "name them in `supervisors`; every_group: supervisors and directors supervise all.",
    )
    retired_groups: list[RetiredGroup] = Field(
        default=[],
        description="Groups removed from the directory, each mapped to a group that remains "
        "(moved_to). Removing a group that holds tickets or that the escalation ladder names "
        "needs one.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DirectoryPolicy:
        group_ids = [g.id for g in self.groups]
        agent_ids = [a.id for a in self.agents] + [o.id for o in self.operators]
        retired = [g.id for g in self.retired_groups]
        for kind, ids in (("group", group_ids + retired), ("agent and operator", agent_ids)):
            if len(set(ids)) != len(ids):
                raise ValueError(f"{kind} ids must be unique")
        for gone in self.retired_groups:
            if gone.moved_to not in group_ids:
                raise ValueError(f"retired group {gone.id}: moved_to {gone.moved_to!r} is no group")
        for agent in self.agents:
            unknown = set(agent.groups) - set(group_ids)
            if unknown:
                raise ValueError(f"agent {agent.id}: unknown groups {sorted(unknown)}")
        for group in self.groups:
            unknown = set(group.supervisors) - {a.id for a in self.agents}
            if unknown:
                raise ValueError(f"group {group.id}: unknown supervisors {sorted(unknown)}")
        return self

    @cached_property
    def group(self) -> dict[str, GroupPolicy]:
        return {g.id: g for g in self.groups}

    @cached_property
    def agent(self) -> dict[str, AgentPolicy]:
        return {a.id: a for a in self.agents}

    def supervises(self, agent_id: str, group_id: str) -> bool:
        """Whether the agent may act as a supervisor on the group's tickets and agents."""
        if self.supervisor_scope == "every_group":
            profile = self.agent.get(agent_id)
            return profile is not None and profile.supervises
        group = self.group.get(group_id)
        return group is not None and agent_id in group.supervisors

    @cached_property
    def moved(self) -> dict[str, str]:
        """Retired group -> the group that took its tickets."""
        return {g.id: g.moved_to for g in self.retired_groups}

    def home(self, group_id: str) -> str | None:
        """The group that answers for ``group_id`` now: itself, where a retired group moved to,
        or None for a group this version does not know at all."""
        if group_id in self.group:
            return group_id
        return self.moved.get(group_id)


class MatrixRow(_Section):
    """product line x problem type -> responsible group; ``*`` matches anything (or nothing)."""

    product_line: str = "*"
    problem_type: str = "*"
    group: str

    def matches(self, product_line: str | None, problem_type: str | None) -> bool:
        return self.product_line in ("*", product_line) and self.problem_type in ("*", problem_type)


class ComplaintRouting(_Section):
    ordinary: str = Field(description="Group for ordinary complaints (customer service).")
    major: str = Field(description="Group for major complaints (a director).")


class EscalationLevel(_Section):
    level: int = Field(ge=1, le=9)
    group: str | None = Field(
        default=None,
        description="Group the ticket is reassigned to at this level; none: notify only.",
    )


def _quiet_period(default: timedelta | None, description: str) -> Any:
    """How long a ticket stays quiet before dispatch's closing worker acts on it: positive, and
    at most 100 years, so the worker's now minus it is still a date."""
    return Field(
        default=default, gt=timedelta(0), le=timedelta(days=36500), description=description
    )


class RoutingPolicy(_Section):
    """Which group a ticket goes to, and where escalations take it."""

    by_complexity: dict[Complexity, str] = Field(
        description="Group per complexity; 'matrix' means: use the classification matrix."
    )
    matrix: list[MatrixRow] = []
    default_group: str = Field(description="Where an unmatched matrix combination goes.")
    complaints: ComplaintRouting
    escalation: list[EscalationLevel] = []
    reopen_to_same_agent: bool = Field(
        default=True, description="A reopened ticket returns to its agent if they have room."
    )
    follow_ups_to_last_agent: bool = Field(
        default=True,
        description="A follow-up ticket (a reply the old ticket could no longer take) goes to "
        "the old ticket's last agent when they are in the group it is routed to, on shift and "
        "have room; else it is routed like any new ticket.",
    )
    reopen_window: Duration = Field(
        default=timedelta(days=7),
        description="A customer's reply to a resolved ticket within this time reopens it; to a "
        "closed ticket, or later, it opens a new ticket linked to the old one.",
    )
    close_after: Duration | None = _quiet_period(
        timedelta(days=7),
        "A resolved ticket nobody reopened is closed by dispatch this long after its "
        "resolution (sop.md: the rating, then the close); none: only a person closes it.",
    )
    silent_if_late_by: Duration = Field(
        default=timedelta(days=1),
        ge=timedelta(hours=1),
        le=timedelta(days=36500),
        description="A close, reminder, unanswered notice or automatic resolution dispatch "
        "makes this much later than it was due (dispatch was stopped, or a new version shortened "
        "a period over a backlog) is recorded silently: nobody is told of it days late. At "
        "least 1h: shorter, the closing worker's own pace would make every one silent.",
    )
    remind_unanswered_after: Duration | None = _quiet_period(
        None,
        "A ticket waiting this long for the customer's reply has them reminded of it "
        "once (ticket.customer_reminded; a notification rule sends it); shorter than "
        "resolve_unanswered_after. None: no reminder.",
    )
    resolve_unanswered_after: Duration | None = _quiet_period(
        None,
        "A ticket waiting this long for the customer's reply is resolved by dispatch "
        "with the reply named by unanswered_resolution (a reply within reopen_window still "
        "reopens it); a category that resolution_requires fields of waits for a person. None: "
        "it waits for a person.",
    )
    unanswered_resolution: str | None = Field(
        default=None,
        min_length=1,
        description="The standard reply (replies.templates) an unanswered ticket's automatic "
        "resolution states, in the ticket's language.",
    )
    resolution_requires: dict[Category, list[ResolutionField]] = Field(
        default={},
        description="What a resolution of each category must state besides its text (sop.md: "
        "a complaint's solution gives the cause, the actions taken and the compensation); a "
        "resolve command without them is refused (resolution_incomplete).",
    )


def check_routing(directory: DirectoryPolicy, routing: RoutingPolicy) -> list[str]:
    """Problems between the two sections (every group named must exist)."""
    known = set(directory.group)
    named = {
        *(g for g in routing.by_complexity.values() if g != "matrix"),
        *(row.group for row in routing.matrix),
        routing.default_group,
        routing.complaints.ordinary,
        routing.complaints.major,
        *(level.group for level in routing.escalation if level.group),
    }
    problems = [f"routing names unknown group {g!r}" for g in sorted(named - known)]
    levels = [level.level for level in routing.escalation]
    if levels != sorted(set(levels)):
        problems.append("routing.escalation levels must be unique and in order")
    return problems

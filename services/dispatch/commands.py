"""Commands agent desks and operator tools send: ``tickets.commands`` and ``agents.commands``.

Each carries a ``command_id`` (the same id twice from the same actor is one command) and its
target; the actor is whoever the record's credential proves (:mod:`services.dispatch.authority`),
so ``actor`` in the payload is optional and must name the same one. :func:`read_ticket_command`
and :func:`read_agent_command` never raise: bytes that are not a valid command — whatever their
size or depth — come back as an :class:`Unreadable` with the reason ``invalid_command``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from services.vocabulary import Category, Complexity
from shared.privacy import scrub
from shared.text import has_control, tidy_line, tidy_text

_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def _safe(value: str) -> str:
    """No NUL, no lone surrogates: what a database or a mail server would choke on later.
    Other control characters are replaced (:mod:`shared.text`): they would reach an agent's
    terminal and the customer's mail."""
    if _UNSAFE.search(value):
        raise ValueError("contains NUL or a lone surrogate")
    return tidy_text(value)


def _an_id(value: str) -> str:
    """An id is made by a program: one with a control character in it is not one."""
    if _UNSAFE.search(value) or has_control(value):
        raise ValueError(
            "contains a control, bidi or invisible formatting character, or a lone surrogate"
        )
    return value


Text = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=32_768),
    AfterValidator(_safe),
]
Id = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=120),
    AfterValidator(_an_id),
]


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: Id
    actor: Id | None = Field(
        default=None,
        description="Optional: the credential's subject (an agent id, 'customer' or 'system'); "
        "a command naming another actor is refused as unauthenticated.",
    )
    issued_at: datetime | None = None


class _TicketCommand(_Command):
    ticket_number: Id


class Accept(_TicketCommand):
    type: Literal["accept"]


class Respond(_TicketCommand):
    """A public reply to the customer: the agent's own words, or a standard reply of the
    policy (``replies.templates``) rendered in the ticket's language."""

    type: Literal["respond"]
    message: Text | None = None
    template: Id | None = Field(default=None, description="A reply of the policy's replies.")

    @model_validator(mode="after")
    def _one_text(self) -> Respond:
        if (self.message is None) == (self.template is None):
            raise ValueError("respond needs either message or template")
        return self


class StartWork(_TicketCommand):
    type: Literal["start_work"]


class AddNote(_TicketCommand):
    """An internal note, never shown to the customer."""

    type: Literal["add_note"]
    note: Text


class RequestCustomerInfo(_TicketCommand):
    type: Literal["request_customer_info"]
    question: Text


class Resolve(_TicketCommand):
    """``cause``, ``actions``, ``compensation``: required for the categories the policy names
    (``routing.resolution_requires``; complaints)."""

    type: Literal["resolve"]
    resolution: Text
    cause: Text | None = None
    actions: Text | None = None
    compensation: Text | None = None


class Reopen(_TicketCommand):
    """The customer rejects the solution."""

    type: Literal["reopen"]
    reason: Text


class Close(_TicketCommand):
    type: Literal["close"]


class Reassign(_TicketCommand):
    """To an agent, to a group (its strategy picks the agent), or both."""

    type: Literal["reassign"]
    to_agent: Id | None = None
    to_group: Id | None = None
    reason: Text

    @model_validator(mode="after")
    def _somewhere(self) -> Reassign:
        if self.to_agent is None and self.to_group is None:
            raise ValueError("reassign needs to_agent or to_group")
        return self


class Escalate(_TicketCommand):
    type: Literal["escalate"]
    reason: Text


class FlagCustomer(_TicketCommand):
    """The customer is abusive or unreasonable: the ticket goes to the group's supervisor."""

    type: Literal["flag_customer"]
    reason: Text


class RequestSpecialist(_TicketCommand):
    """Ask another group for findings; the ticket stays with its owner."""

    type: Literal["request_specialist"]
    to_group: Id
    question: Text


class ProvideFindings(_TicketCommand):
    """The answer of the group a specialist request asked."""

    type: Literal["provide_findings"]
    findings: Text


class Reclassify(_TicketCommand):
    """Triage was wrong: the ticket's real complexity and/or category; routing takes it on."""

    type: Literal["reclassify"]
    complexity: Complexity | None = None
    category: Category | None = None
    complaint_severity: Literal["ordinary", "major"] | None = Field(
        default=None, description="For category complaint (default ordinary)."
    )
    reason: Text

    @model_validator(mode="after")
    def _something(self) -> Reclassify:
        if self.complexity is None and self.category is None:
            raise ValueError("reclassify needs complexity or category")
        if self.complaint_severity is not None and self.category != "complaint":
            raise ValueError("complaint_severity goes with category complaint")
        return self


class RecordSatisfaction(_TicketCommand):
    type: Literal["record_satisfaction"]
    score: int = Field(ge=1, le=5, strict=True)
    comment: Annotated[
        str, StringConstraints(strip_whitespace=True, max_length=4000), AfterValidator(_safe)
    ] = ""


TicketCommand = Annotated[
    Accept
    | Respond
    | StartWork
    | AddNote
    | RequestCustomerInfo
    | Resolve
    | Reopen
    | Close
    | Reassign
    | Escalate
    | Reclassify
    | FlagCustomer
    | RequestSpecialist
    | ProvideFindings
    | RecordSatisfaction,
    Field(discriminator="type"),
]


class _AgentCommand(_Command):
    agent_id: Id


class GoOnShift(_AgentCommand):
    type: Literal["go_on_shift"]


class GoOffShift(_AgentCommand):
    type: Literal["go_off_shift"]


class SetCapacity(_AgentCommand):
    type: Literal["set_capacity"]
    capacity: int = Field(ge=0, le=100_000, strict=True)


AgentCommand = Annotated[GoOnShift | GoOffShift | SetCapacity, Field(discriminator="type")]
AGENT_COMMAND_TYPES = (GoOnShift, GoOffShift, SetCapacity)

_TICKET = TypeAdapter[TicketCommand](TicketCommand)
_AGENT = TypeAdapter[AgentCommand](AgentCommand)


@dataclass(frozen=True)
class Unreadable:
    """A record that is not a valid command."""

    reason: str
    detail: str
    command_id: str | None
    command: str | None
    target: str | None
    actor: str | None
    original: str


def read_ticket_command(value: bytes) -> TicketCommand | Unreadable:
    try:
        return _TICKET.validate_json(value)
    except ValidationError as error:
        return _unreadable(value, error, "ticket_number")


def read_agent_command(value: bytes) -> AgentCommand | Unreadable:
    try:
        return _AGENT.validate_json(value)
    except ValidationError as error:
        return _unreadable(value, error, "agent_id")


def _unreadable(value: bytes, error: ValidationError, target: str) -> Unreadable:
    first = error.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    return unreadable(value, f"{where}: {first['msg']}", target)


def unreadable(value: bytes, detail: str, target: str) -> Unreadable:
    """What can be read of a record that is not a command (its id, type, target, actor, first
    bytes), for the rejection that answers it."""
    try:
        document: Any = json.loads(value)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python recurses
        document = {}
    if not isinstance(document, dict):
        document = {}

    def text(key: str) -> str | None:
        found = document.get(key)
        return tidy_line(_UNSAFE.sub("\ufffd", found[:120])) if isinstance(found, str) else None

    return Unreadable(
        reason="invalid_command",
        detail=scrub(detail[:500]),
        command_id=text("command_id"),
        command=text("type"),
        target=text(target),
        actor=text("actor"),
        original=_UNSAFE.sub("\ufffd", value[:2048].decode("utf-8", "replace")),
    )

"""Policy section of notify: which event notifies whom, over which channels, with which template.

Rules are checked in order and *all* matching rules fire (an escalation may tell the supervisors
and the assignee). ``channels`` is the recipient's order of preference: the first channel for
which the recipient has a usable contact is used; none usable is a recorded failure. Templates
are Jinja2 (rendered in a sandbox), one subject and body per language; a customer's language
picks the variant, falling back to ``default_language``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from jinja2 import TemplateSyntaxError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from services.policy.sla import TimeZoneName
from services.vocabulary import RouteCause
from shared.durations import Duration
from shared.endpoints import ANY_NETWORK, EndpointRefused, check_endpoint
from shared.mailbox import is_mailbox
from shared.templating import check

Trigger = Literal[
    "ticket.triaged",
    "ticket.assigned",
    "ticket.queued",
    "ticket.responded",
    "ticket.note_added",
    "ticket.customer_replied",
    "ticket.waiting_for_customer",
    "ticket.customer_reminded",
    "ticket.left_unanswered",
    "ticket.resolved",
    "ticket.reopened",
    "ticket.closed",
    "ticket.satisfaction_recorded",
    "ticket.escalated",
    "ticket.reassigned",
    "ticket.customer_flagged",
    "ticket.specialist_requested",
    "ticket.findings_provided",
    "sla.clock_warned",
    "sla.clock_breached",
    "sla.escalated",
]
NoticeChannel = Literal["email", "webhook", "sms", "messages"]
"""``messages``: the public topic ``customer.messages``, which the adapter of the ticket's channel
delivers; usable for customers whose ticket came by chat, web, api or phone."""


def _web_address(value: str) -> str:
    """An address notify can POST to, checked for its form when the policy (or the settings)
    load: one that cannot be sent to is a mistake to hear about at once, not a notice failing
    later. Which networks it may reach is checked against the settings
    (:func:`services.policy.endpoints_allowed`, ``NotifySettings``)."""
    try:
        check_endpoint(value, ANY_NETWORK)
    except EndpointRefused as refused:
        raise ValueError(f"{value!r}: {refused}") from None
    return value


WebAddress = Annotated[str, AfterValidator(_web_address)]
"""An http(s) URL with a host, that httpx can send to (webhooks, the SMS provider)."""


def _mailbox(value: str) -> str:
    if not is_mailbox(value):
        raise ValueError(
            f"{value!r} is not an address mail can be sent to as written (name@example.com; "
            "no display name, quotes, brackets, ';' or ','): the SMTP client would read it as "
            "another mailbox"
        )
    return value


Mailbox = Annotated[str, AfterValidator(_mailbox)]
"""An e-mail address mail can be sent to as written (:mod:`shared.mailbox`)."""
_RECIPIENT = r"^(customer|assignee|supervisors|directors|specialists|agent:[a-z0-9][a-z0-9_.-]*)$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemplateText(_Section):
    subject: str
    body: str

    @model_validator(mode="after")
    def _compiles(self) -> TemplateText:
        for name in ("subject", "body"):
            try:
                check(getattr(self, name))
            except TemplateSyntaxError as error:
                raise ValueError(f"{name}: line {error.lineno}: {error.message}") from None
        return self


class NoticeLimit(_Section):
    """At most ``count`` notices of one rule within ``per`` — to one customer, or to one
    recipient about one ticket (a year at most: the window is counted back from now, and the
    notices it counts are rows kept that long)."""

    count: int = Field(ge=1)
    per: Duration = Field(gt=timedelta(0), le=timedelta(days=366))


class NotificationRule(_Section):
    event: Trigger
    to: str = Field(
        pattern=_RECIPIENT,
        description="customer, assignee, supervisors (of the ticket's group), directors, "
        "specialists (the agents of the group a specialist request asks), or agent:<id>.",
    )
    template: str
    channels: list[NoticeChannel] = Field(min_length=1, description="In order of preference.")
    levels: list[int] | None = Field(
        default=None, description="sla.escalated only: the escalation levels this rule is for."
    )
    metrics: list[str] | None = Field(
        default=None, description="sla.* only: the SLA metrics this rule is for (none: all)."
    )
    by_reply: bool | None = Field(
        default=None,
        description="ticket.reopened only: true for a reopen by the customer's reply (which "
        "ticket.customer_replied also tells, with the reply), false for one by a command (the "
        "survey link's, a supervisor's); none: both.",
    )
    causes: list[RouteCause] | None = Field(
        default=None,
        description="ticket.queued only: why the ticket was routed into the queue (classified, "
        "queue, reassigned, escalated, reopened); none: every cause.",
    )
    satisfied: bool | None = Field(
        default=None,
        description="ticket.satisfaction_recorded only: true for scores of "
        "sla.satisfaction.satisfied_from or more, false for those below (a dissatisfied "
        "customer); none: every score.",
    )
    by_person: bool | None = Field(
        default=None,
        description="ticket.escalated and ticket.resolved only: true for a person's escalation "
        "(the escalate command: the ticket goes to a supervisor) or resolution, false for the "
        "system's (an SLA breach, whose sla.escalated notices already tell the people of its "
        "level; a question the customer left unanswered); none: both.",
    )
    assigned: bool | None = Field(
        default=None,
        description="sla.clock_warned and sla.clock_breached only: true when the ticket had an "
        "agent as the clock warned or breached, false when it had none (waiting in its "
        "group's queue: no assignee to tell); none: either.",
    )
    by_assignee: bool | None = Field(
        default=None,
        description="ticket.responded and ticket.note_added only: true when the ticket's "
        "assignee wrote it, false when someone else did (a supervisor's reply to the customer, "
        "a colleague's internal note: the assignee hears of what was said on their ticket); "
        "none: either. On these events 'assignee' is whoever has the ticket, not the author.",
    )

    at_most: NoticeLimit | None = Field(
        default=None,
        description="at most count notices of this rule within per: to one customer (the "
        "data subject, however many addresses) for a customer rule, to one recipient about one "
        "ticket for any other; the rest are recorded as failed 'limited' and not sent. RFC "
        "3834: an automatic answer must not answer one sender without end — a mail loop, or a "
        "flood of mail forging a victim's address; nor should a flood of replies to one ticket "
        "page its agent once a reply.",
    )

    @model_validator(mode="after")
    def _conditions_fit_the_event(self) -> NotificationRule:
        problems = [
            f"{name} is a condition of {' and '.join(events)} rules only, not of {self.event}"
            for name, events in _CONDITIONS.items()
            if getattr(self, name) is not None and self.event not in events
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self


_CONDITIONS: dict[str, tuple[Trigger, ...]] = {
    "by_reply": ("ticket.reopened",),
    "causes": ("ticket.queued",),
    "satisfied": ("ticket.satisfaction_recorded",),
    "assigned": ("sla.clock_warned", "sla.clock_breached"),
    "by_person": ("ticket.escalated", "ticket.resolved"),
    "by_assignee": ("ticket.responded", "ticket.note_added"),
}
"""A rule's conditions on what some kinds of event say, and those events."""


class Sender(_Section):
    name: str
    email: Mailbox


class NotificationPolicy(_Section):
    sender: Sender
    default_language: str = "en"
    time_zone: TimeZoneName = Field(
        default="UTC",
        description="Where the people notified are: a template's {{ moment | local }} shows a "
        "time of an event (a deadline, a breach) in this zone, '2026-11-20 18:00 "
        "(Asia/Shanghai)'.",
    )
    survey_url: str = Field(
        description="Satisfaction survey link, a template ({{ number }}, {{ ticket_id }})."
    )
    rules: list[NotificationRule]
    templates: dict[str, dict[str, TemplateText]] = Field(
        description="template name -> language -> subject and body."
    )

    @field_validator("templates")
    @classmethod
    def _languages(
        cls, value: dict[str, dict[str, TemplateText]]
    ) -> dict[str, dict[str, TemplateText]]:
        for name, variants in value.items():
            if not variants:
                raise ValueError(f"template {name} has no language")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> NotificationPolicy:
        problems = [
            f"rules[{i}] uses unknown template {rule.template!r}"
            for i, rule in enumerate(self.rules)
            if rule.template not in self.templates
        ]
        problems += [
            f"template {name} has no {self.default_language!r} variant (the fallback)"
            for name, variants in self.templates.items()
            if self.default_language not in variants
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

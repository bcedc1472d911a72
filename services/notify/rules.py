"""Which notices an event causes: rules, recipients, contacts, rendered text. Pure.

A notice's key is its de-duplication key — cause event id, recipient and template — so the same
event handled twice yields the same keys and the delivery table keeps one row each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from jinja2 import TemplateError
from pydantic import BaseModel

from services.dispatch import events as dispatch
from services.intake import events as intake
from services.notify.events import mail_message_id
from services.notify.templates import pick_language, render, render_again, render_text, uses
from services.policy import Policy
from services.policy.calendar import BusinessCalendar
from services.policy.dispatch import AgentPolicy
from services.policy.notify import (
    NoticeChannel,
    NoticeLimit,
    NotificationPolicy,
    NotificationRule,
)
from services.policy.sla import DEFAULT_SATISFACTION, CalendarPolicy, Metric, choose
from shared.events import EventData
from shared.personal import ERASED, OptionalPersonalText, PersonalText


class NoticeFacts(BaseModel):
    """What notify keeps of a ticket: who the customer is, how to reach them, who has it now.

    ``received`` is false while only other services' events were seen (intake's events and
    dispatch's travel on different topics): nobody can be told yet — the customer has no contact
    and an agent's notice would have no subject — so such an event waits (:func:`waits`)
    until the receipt arrives. intake records the receipt before any other service hears of the
    ticket, so it always comes; and dispatch routes every ticket it reads (``group_id`` is set
    by its first heard event), so an event waiting for the routing is released too.
    """

    ticket_id: str
    number: str
    received: bool = True
    subject: PersonalText = ""
    received_at: datetime | None = None
    customer_name: PersonalText = ""
    email: OptionalPersonalText = None
    phone: OptionalPersonalText = None
    language: str | None = None
    complexity: str = "general"
    priority: str = "normal"
    channel: str = "email"
    complaint: bool = False
    major_complaint: bool = False
    group_id: str | None = None
    agent_id: str | None = None
    channel_message_id: str = ""
    closed: bool = False
    """Closed: nobody has it any longer. A reply to it opens a follow-up ticket (dispatch), whose
    assignment tells its agent; its last assignee is not told (:func:`recipients`)."""
    resolved_at: datetime | None = None
    """When dispatch resolved it (its event's time); None while open."""
    followed_up: bool = False
    """A reply came longer after the resolution than ``routing.reopen_window``: dispatch follows
    the ticket up with a new one instead of reopening it, so, as when closed, nobody has it."""
    customer_id: OptionalPersonalText = None
    thread: list[str] = []
    """Message-IDs of the ticket's email conversation so far, oldest first: the customer's
    mails and notify's to them. A customer email's ``References`` (its last: ``In-Reply-To``)."""


THREAD_LENGTH = 20
"""Most Message-IDs a notice's ``References`` carry: the first (the customer's opening mail) and
the latest, as RFC 5322 suggests for long threads."""
TOPIC_CHANNELS = frozenset({"messages"})
"""Channels that are a topic: a notice is published by the consumer that makes it (sent at once,
by the relay), never handed to the delivery worker."""
CONVERSATION_CHANNELS = frozenset({"chat", "web", "api", "phone"})
"""Where a ticket's customer is reached through its channel's adapter (``customer.messages``)."""


@dataclass(frozen=True)
class Recipient:
    key: str
    name: str
    language: str | None
    contacts: dict[NoticeChannel, str | None]


@dataclass(frozen=True)
class Notice:
    notice_key: str
    ticket_id: str
    number: str
    cause_event_id: str
    recipient: str
    channel: NoticeChannel | None
    address: str | None
    template: str
    language: str
    subject: str
    body: str
    failure: str | None = None
    """``no_contact`` or ``template_error``: recorded as failed without an attempt."""
    error: str = ""
    thread: tuple[str, ...] = ()
    """An email to the customer: the Message-IDs it follows (``References``)."""
    at_most: NoticeLimit | None = None
    """Its rule's limit: per customer for the customer's, per ticket for anyone else's
    (:mod:`services.notify.limits`)."""
    customer_ref: str | None = None
    """A customer notice: the pseudonym of the customer it goes to, once known (the limit
    counts by it)."""
    if_erased: tuple[str, str] | None = None
    """A notice to the desk's people about a sealed customer's ticket: its subject and body
    rendered again from the ticket and event as they read once the customer is erased — what
    goes out instead if the erasure comes before the notice does (its text is sealed under the
    customer's key until then: :mod:`services.notify.sealing`)."""


AUTHORED = frozenset({"ticket.responded", "ticket.note_added", "ticket.resolved"})
"""Events whose ``agent_id`` is who wrote them (or ``system``), not who has the ticket."""

SurveyContext = Callable[[str], dict[str, str]]
"""A ticket number -> what a customer notice's ``survey_url`` template needs besides the ticket
(``console_url``, ``token``: :class:`services.notify.survey.SurveyLinks`)."""


def notices(
    policy: Policy,
    facts: NoticeFacts,
    trigger: str,
    data: dict[str, Any],
    event_id: str,
    *,
    survey: SurveyContext = lambda number: {},
    erased: Callable[[], dict[str, Any] | None] = lambda: None,
) -> list[Notice]:
    """Every notice the rules of ``policy`` give for one event about the ticket; none before its
    receipt is known (:func:`waits`). A recipient two rules reach gets the first one's notice
    only: a queued ticket's late specialist group warned its supervisors twice, in two texts.

    ``erased`` gives the event's data as it reads once the customer is erased (None: nothing of
    theirs is sealed); asked for at most once, by the first notice to someone other than the
    customer, which is rendered that way too (:attr:`Notice.if_erased`)."""
    settings = policy.notifications
    if settings is None or not facts.received:
        return []
    found: list[Notice] = []
    told: set[str] = set()
    shadow: list[dict[str, Any] | None] = []
    for rule in _rules(policy, trigger, data, holder=assignee_of(facts)):
        for recipient in recipients(policy, rule, facts, data):
            if recipient.key in told:
                continue  # one notice a person an event: the first rule that reaches them
            told.add(recipient.key)
            links = survey if recipient.key == "customer" else _no_links
            notice, context = _notice(
                policy, settings, rule, recipient, facts, data, event_id, links
            )
            if recipient.key != "customer" and not notice.failure:
                if not shadow:
                    shadow.append(erased())
                if (event := shadow[0]) is not None:
                    notice = _if_erased(settings, notice, context, event)
            found.append(_threaded(facts, notice))
    return found


_PERSONAL = frozenset({"subject", "customer_name"})
"""What a notice's context holds of the customer's personal data, besides sealed fields of the
event (``event``)."""


def _if_erased(
    settings: NotificationPolicy, notice: Notice, context: dict[str, Any], event: dict[str, Any]
) -> Notice:
    """``notice`` with what it says once its customer is erased (:attr:`Notice.if_erased`): a
    part that reads none of their data as it is, one that does rendered again with "erased"."""
    changed = _PERSONAL | ({"event"} if event != context["event"] else set())
    erased = {**context, "subject": ERASED, "customer_name": ERASED, "event": event}
    try:
        again = render_again(
            settings, notice.template, notice.language, erased, (notice.subject, notice.body),
            changed,
        )  # fmt: skip
    except TemplateError:
        return notice  # it rendered with the customer's data: failing "erased" is all it can do
    return replace(notice, if_erased=again)


def _threaded(facts: NoticeFacts, notice: Notice) -> Notice:
    """An email to the customer follows the conversation so far and becomes part of it."""
    if notice.recipient != "customer" or notice.channel != "email" or notice.failure:
        return notice
    threaded = replace(notice, thread=tuple(facts.thread))
    facts.thread = _bounded([*facts.thread, mail_message_id(notice.notice_key, facts.number)])
    return threaded


def _bounded(thread: list[str]) -> list[str]:
    return thread if len(thread) <= THREAD_LENGTH else [thread[0], *thread[1 - THREAD_LENGTH :]]


def _mail_id(channel_message_id: str) -> str | None:
    """A channel message id of the email channel as a Message-ID (the email adapter uses the
    mail's own); None when it is not one."""
    bare = channel_message_id.strip().strip("<>")
    return f"<{bare}>" if "@" in bare and " " not in bare else None


def fires(policy: Policy, trigger: str, data: dict[str, Any], *, holder: str | None = None) -> bool:
    """Some rule of ``policy`` answers this event (whether or not it finds a recipient), the
    ticket being held by ``holder``."""
    return bool(_rules(policy, trigger, data, holder=holder))


def assignee_of(facts: NoticeFacts) -> str | None:
    """Who has the ticket now: its agent, unless it is closed or followed up (nobody works it
    any longer)."""
    return None if facts.closed or facts.followed_up else facts.agent_id


def waits(policy: Policy, facts: NoticeFacts, trigger: str, data: dict[str, Any]) -> bool:
    """The event owes someone a notice that notify cannot make yet: the event is kept and its
    notices made when what it lacks arrives.

    What it can lack, since intake's events and dispatch's travel on different topics: the
    ticket's receipt (an agent's notice made before it would name no subject, a customer's would
    have no contact), or — for a notice to the ticket's assignee or its supervisors that the
    event does not name — dispatch's routing of the ticket: a customer's reply read before its
    ticket's assignment would otherwise tell nobody.
    """
    rules = _rules(policy, trigger, data, holder=assignee_of(facts))
    if not rules:
        return False
    if not facts.received:
        return True
    return facts.group_id is None and any(_needs_routing(rule, data) for rule in rules)


def _needs_routing(rule: NotificationRule, data: dict[str, Any]) -> bool:
    """The rule's recipients come from who has the ticket, and the event does not say."""
    if rule.to == "assignee":
        return "agent_id" not in data and "to_agent" not in data
    return rule.to == "supervisors" and "group_id" not in data


def _rules(
    policy: Policy, trigger: str, data: dict[str, Any], *, holder: str | None
) -> list[NotificationRule]:
    settings = policy.notifications
    if settings is None:
        return []
    satisfaction = policy.sla.satisfaction if policy.sla is not None else DEFAULT_SATISFACTION
    by_reply = data.get("by_reply") if trigger == "ticket.reopened" else None
    score = data.get("score")
    return [
        rule
        for rule in settings.rules
        if rule.event == trigger
        and not data.get("silent")  # a backlog the system closed (dispatch's TicketClosed)
        and (rule.levels is None or data.get("level") in rule.levels)
        and (rule.metrics is None or data.get("metric") in rule.metrics)
        and (rule.by_reply is None or bool(by_reply) == rule.by_reply)
        and (rule.causes is None or data.get("cause") in rule.causes)
        and (rule.assigned is None or _assigned(data) == rule.assigned)
        and (rule.by_person is None or _by_person(trigger, data) == rule.by_person)
        and (rule.by_assignee is None or (data.get("agent_id") == holder) == rule.by_assignee)
        and (
            rule.satisfied is None
            or (isinstance(score, int) and satisfaction.satisfied(score) == rule.satisfied)
        )
    ]


def _assigned(data: dict[str, Any]) -> bool | None:
    """Whether the event's ticket has an agent on it; None (no ``assigned`` rule fires) for a
    specialist request's clock, which the group asked answers for, queued or not."""
    return None if data.get("specialists") else data.get("agent_id") is not None


def _by_person(trigger: str, data: dict[str, Any]) -> bool:
    """An event a person caused: its actor is neither missing nor the system itself (a
    resolution's is its ``agent_id``, ``system`` only when the system resolved it)."""
    if trigger == "ticket.resolved":
        return data.get("agent_id") != "system"
    return data.get("actor") not in (None, "system")


def recipients(
    policy: Policy, rule: NotificationRule, facts: NoticeFacts, data: dict[str, Any]
) -> list[Recipient]:
    directory = policy.directory
    if rule.to == "customer":
        conversation = facts.channel_message_id if facts.channel in CONVERSATION_CHANNELS else None
        contacts: dict[NoticeChannel, str | None] = {
            "email": facts.email,
            "sms": facts.phone,
            "messages": conversation or None,
        }
        return [Recipient("customer", facts.customer_name, facts.language, contacts)]
    if rule.to == "assignee":
        # On an event someone wrote, its agent_id is the author; the assignee has the ticket.
        # A specialist request's clock is the group asked's: the ticket's owner waits on it.
        named = None if rule.event in AUTHORED else data.get("agent_id") or data.get("to_agent")
        agent_id = None if data.get("specialists") else named or assignee_of(facts)
        agents = [directory.agent[agent_id]] if agent_id in directory.agent else []
    elif rule.to == "specialists":
        asked = data.get("to_group") or (data.get("group_id") if data.get("specialists") else None)
        agents = [a for a in directory.agents if asked in a.groups]
    elif rule.to == "supervisors":
        # A retired group's supervisors are those of the group that took its tickets.
        home = directory.home(data.get("group_id") or facts.group_id or "")
        group = directory.group.get(home or "")
        agents = [directory.agent[a] for a in group.supervisors] if group else []
    elif rule.to == "directors":
        kinds = {g.id for g in directory.groups if g.kind == "directors"}
        agents = [a for a in directory.agents if kinds & set(a.groups)]
    else:
        agents = [directory.agent[rule.to[6:]]]
    return [_agent(agent) for agent in agents]


def _agent(agent: AgentPolicy) -> Recipient:
    contacts: dict[NoticeChannel, str | None] = {
        "email": agent.email,
        "sms": agent.phone,
        "webhook": agent.webhook_url,
    }
    return Recipient(f"agent:{agent.id}", agent.name, agent.languages[0], contacts)


_SURVEY = frozenset({"survey_url", "console_url", "token"})
"""What a template reads of the survey link."""


def _no_links(number: str) -> dict[str, str]:
    return {}


def _notice(  # noqa: PLR0917 - private; the names at the one call site say it
    policy: Policy,
    settings: NotificationPolicy,
    rule: NotificationRule,
    recipient: Recipient,
    facts: NoticeFacts,
    data: dict[str, Any],
    event_id: str,
    links: SurveyContext,
) -> tuple[Notice, dict[str, Any]]:
    """The notice, and the context its template was rendered with."""
    language = pick_language(settings, rule.template, recipient.language)
    channel = next((c for c in rule.channels if recipient.contacts.get(c)), None)
    base: dict[str, Any] = {
        "notice_key": f"{event_id}:{recipient.key}:{rule.template}",
        "ticket_id": facts.ticket_id,
        "number": facts.number,
        "cause_event_id": event_id,
        "recipient": recipient.key,
        "channel": channel,
        "address": recipient.contacts.get(channel) if channel else None,
        "template": rule.template,
        "language": language,
        "at_most": rule.at_most,
    }
    context = {
        "number": facts.number,
        "ticket_id": facts.ticket_id,
        "subject": facts.subject,
        "customer_name": facts.customer_name,
        "recipient_name": recipient.name,
        "time_zone": settings.time_zone,
        "metric_name": _metric_name(policy, data.get("metric"), language),
        "event": data,
        "expected_by": expected_by(policy, facts) if rule.event == "ticket.triaged" else None,
        "console_url": "",
        "token": "",
        "survey_url": "",
    }
    try:
        # The survey link is a signed token: made only for a template that shows it.
        if uses(settings, rule.template, language) & _SURVEY:
            context.update(links(facts.number))
            context["survey_url"] = render_text(settings.survey_url, context)
        subject, body = render(settings, rule.template, language, context)
    except TemplateError as error:
        failed = Notice(**base, subject="", body="", failure="template_error", error=str(error))
        return failed, context
    if channel is None:
        wanted = ", ".join(rule.channels)
        unsendable = Notice(
            **base,
            subject=subject,
            body=body,
            failure="no_contact",
            error=f"{recipient.key} has no contact for {wanted}",
        )
        return unsendable, context
    return Notice(**base, subject=subject, body=body), context


def _metric_name(policy: Policy, metric: object, language: str) -> str:
    """An SLA event's metric as people read it in ``language`` (its label, else its id)."""
    if not isinstance(metric, str) or policy.sla is None:
        return metric if isinstance(metric, str) else ""
    labels = next((d.labels for m, d in policy.sla.metrics.items() if m == metric), {})
    return labels.get(language) or labels.get(language.partition("-")[0]) or metric


def expected_by(policy: Policy, facts: NoticeFacts) -> str | None:
    """When the customer can expect an answer: the first-response target (or the complaint
    first-contact target) after receipt, on its business calendar, in the calendar's zone."""
    sla = policy.sla
    if sla is None or facts.received_at is None:
        return None
    metric: Metric = "complaint_first_contact" if facts.complaint else "first_response"
    chosen = choose(sla, metric, facts)
    if chosen is None:
        return None
    rule = chosen[1]
    calendar = _calendar(sla.calendars[rule.calendar])
    due = calendar.add(facts.received_at, rule.target / timedelta(seconds=1))
    local = due.astimezone(calendar.zone)
    return f"{local:%Y-%m-%d %H:%M} ({calendar.zone.key})"


_CALENDARS: dict[int, tuple[CalendarPolicy, BusinessCalendar]] = {}


def _calendar(definition: CalendarPolicy) -> BusinessCalendar:
    """The calendar of a definition in force, made once (its hours parsed, its days kept), not
    for every acknowledgement; held by identity with the definition, so a new policy's
    definitions get calendars of their own."""
    held = _CALENDARS.get(id(definition))
    if held is None or held[0] is not definition:
        if len(_CALENDARS) >= 64:  # policies replaced many times: start again
            _CALENDARS.clear()
        held = _CALENDARS[id(definition)] = (definition, BusinessCalendar(definition))
    return held[1]


def evolve(
    facts: dict[str, NoticeFacts],
    data: EventData,
    *,
    at: datetime | None = None,
    reopen_window: timedelta | None = None,
) -> NoticeFacts | None:
    """What an event of intake, dispatch or sla (recorded ``at``) teaches notify about its
    ticket (kept in ``facts``, by ticket id); None for an event about no ticket.
    ``reopen_window`` is the policy's: a reply later than that after the resolution is followed
    up, as dispatch judges it (by the reply's time, dispatch by its clock: at the window's very
    edge the two may differ)."""
    ticket_id = str(getattr(data, "ticket_id", ""))
    if not ticket_id:
        return None
    ticket = facts.get(ticket_id)
    if isinstance(data, intake.TicketReceived):
        customer = data.customer
        facts[ticket_id] = NoticeFacts(
            ticket_id=ticket_id,
            number=data.number,
            subject=data.subject,
            received_at=data.received_at,
            customer_name=customer.name,
            email=customer.email,
            phone=customer.phone,
            language=customer.language or data.language,
            channel=data.channel,
            priority=data.priority,
            group_id=ticket.group_id if ticket else None,
            agent_id=ticket.agent_id if ticket else None,
            closed=ticket.closed if ticket else False,
            channel_message_id=data.channel_message_id,
            customer_id=customer.customer_id,
            thread=_opening(data, ticket),
        )
        return facts[ticket_id]
    if ticket is None:  # dispatch or sla ran ahead of intake's topic: what the event says
        ticket = facts[ticket_id] = NoticeFacts(
            ticket_id=ticket_id, number=str(getattr(data, "number", "")), received=False
        )
    _learn(ticket, data)
    match data:
        case dispatch.TicketResolved():
            ticket.resolved_at = at
        case dispatch.TicketReopened():
            ticket.resolved_at, ticket.followed_up = None, False
        case intake.CustomerReplied() if ticket.resolved_at and reopen_window is not None:
            ticket.followed_up = data.received_at - ticket.resolved_at > reopen_window
        case _:
            pass
    return ticket


def _learn(ticket: NoticeFacts, data: EventData) -> None:
    """What an event other than the receipt changes of the ticket's facts."""
    match data:
        case intake.TicketTriaged():
            ticket.complexity, ticket.priority = data.complexity, data.priority
            ticket.complaint = data.complaint
            ticket.major_complaint = data.complaint_severity == "major"
        case dispatch.TicketAssigned():
            ticket.group_id, ticket.agent_id = data.group_id, data.agent_id
        case dispatch.TicketQueued():
            ticket.group_id, ticket.agent_id = data.group_id, None
        case dispatch.TicketReassigned():
            ticket.group_id, ticket.agent_id = data.to_group, None
        case dispatch.TicketEscalated() if data.to_group is not None:
            ticket.group_id, ticket.agent_id = data.to_group, data.to_agent
        case dispatch.TicketClosed():
            ticket.closed = True
        case dispatch.TicketReopened():
            ticket.closed = False
        case intake.CustomerReplied() if data.channel == "email":
            if mail := _mail_id(data.channel_message_id):
                ticket.thread = _bounded([*ticket.thread, mail])
        case _:
            pass


def _opening(receipt: intake.TicketReceived, before: NoticeFacts | None) -> list[str]:
    """The thread as the receipt starts it: the customer's mail, then whatever notify already
    sent or heard (events that ran ahead of the receipt)."""
    mail = _mail_id(receipt.channel_message_id) if receipt.channel == "email" else None
    earlier = before.thread if before else []
    return _bounded([mail, *earlier] if mail else earlier)

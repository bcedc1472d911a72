"""The groups a message may change: where it may route a ticket, whose room it may free. Pure.

Dispatch locks the pools of these groups before it loads loads and queues
(:mod:`services.dispatch.pools`), so the answer must cover everything the :class:`Desk` may do
with the message — erring wide costs only parallelism; the desk refuses to route outside what
its batch holds (:class:`~services.dispatch.desk.OutOfReach`), so a gap here fails loudly
instead of breaking a capacity limit. A message that names a ticket always reaches the ticket's
own group and its agent's groups, so two messages about one ticket never run side by side.
"""

from __future__ import annotations

from services.dispatch.commands import (
    AGENT_COMMAND_TYPES,
    AgentCommand,
    Escalate,
    FlagCustomer,
    Reassign,
    Reclassify,
    TicketCommand,
)
from services.dispatch.desk import corrected_class
from services.dispatch.routing import classify, escalation_group, group_for
from services.dispatch.ticket import Refused, Ticket
from services.intake.events import TicketTriaged
from services.policy import Policy
from services.sla.events import EscalationRaised


def agent_groups(policy: Policy, agent_id: str | None) -> set[str]:
    profile = policy.directory.agent.get(agent_id or "")
    return set(profile.groups) if profile else set()


def of_ticket(policy: Policy, ticket: Ticket) -> set[str]:
    """Its group and its agent's groups: where a reply, a reopen or a freed seat lands."""
    return {group_for(policy, ticket.group_id), *agent_groups(policy, ticket.agent_id)}


def of_triaged(policy: Policy, triaged: TicketTriaged) -> set[str]:
    route = classify(
        policy.routing,
        complexity=triaged.complexity,
        complaint_severity=triaged.complaint_severity,
        product_line=triaged.product_line,
        problem_type=triaged.problem_type,
    )
    return {group_for(policy, route.group_id)}


def of_escalation(policy: Policy, ticket: Ticket, level: int) -> set[str]:
    to_group = escalation_group(policy.routing.escalation, level, ticket.group_id)
    return of_ticket(policy, ticket) | ({group_for(policy, to_group)} if to_group else set())


def of_supervisors(policy: Policy, ticket: Ticket) -> set[str]:
    """A person's escalation or a flag hands the ticket to a supervisor of its group (or of its
    agent's groups) — any of them, by who has room — in that supervisor's first group; their
    room counts across all their groups, so all of those are reached."""
    directory = policy.directory
    groups = of_ticket(policy, ticket)
    for group_id in set(groups):
        group = directory.group.get(group_id)
        for supervisor in group.supervisors if group else []:
            groups |= agent_groups(policy, supervisor)
    return groups


def of_event(policy: Policy, data: object, ticket: Ticket | None) -> set[str]:
    """A triaged ticket, a customer reply or an SLA escalation."""
    if isinstance(data, TicketTriaged):
        return of_triaged(policy, data)
    if ticket is None:
        return set()
    if isinstance(data, EscalationRaised):
        return of_escalation(policy, ticket, data.level)
    return of_ticket(policy, ticket)


def of_command(
    policy: Policy, command: TicketCommand | AgentCommand, ticket: Ticket | None
) -> set[str]:
    """A ticket command (``ticket``: the one it names, if known) or an agent command."""
    if isinstance(command, AGENT_COMMAND_TYPES):
        return agent_groups(policy, command.agent_id)
    if ticket is None:
        return set()
    groups = of_ticket(policy, ticket)
    match command:
        case Reassign():
            if command.to_group:
                groups.add(group_for(policy, command.to_group))
            groups |= agent_groups(policy, command.to_agent)
        case Escalate() | FlagCustomer():
            groups = of_supervisors(policy, ticket)
        case Reclassify():
            try:
                complexity, _, severity = corrected_class(policy, ticket, command)
            except Refused:
                return groups
            route = classify(
                policy.routing,
                complexity=complexity,
                complaint_severity=severity,
                product_line=ticket.product_line,
                problem_type=ticket.problem_type,
            )
            groups.add(group_for(policy, route.group_id))
    return groups

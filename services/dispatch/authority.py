"""Whose command a record is, and what that credential may do. Pure but for the key ring.

A command counts only with a credential (:mod:`shared.credentials`): the record's proof headers
are checked against the key ring, and the actor is the token's subject. The payload's ``actor``
is optional; when given it must name the same actor, or the command is refused as
``unauthenticated`` (a record that says one actor and is signed by another is a forgery, not a
typo). A customer token acts on its one ticket, with the command types it lists; anything else
it tries is ``not_permitted``; a channel client's token (``channel:<name>``) sends no commands at
all. Whether the actor may do what the command asks (assignee,
supervisor of the ticket's group, …) is the desk's decision, as for every command.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.dispatch.commands import AGENT_COMMAND_TYPES, AgentCommand, TicketCommand, Unreadable
from services.dispatch.desk import CommandRefusal
from shared.credentials import CommandVerifier, Credential, Unauthenticated
from shared.deadletter import Record

UNAUTHENTICATED = "unauthenticated"
NOT_PERMITTED = "not_permitted"


@dataclass(frozen=True)
class Attributed:
    """A command whose credential checked out; ``command.actor`` is the credential's subject."""

    command: TicketCommand | AgentCommand
    credential: Credential

    @property
    def principal(self) -> str:
        """Whose command ids these are: an agent, ``system``, or the customer of one ticket."""
        ticket = self.credential.ticket
        return f"customer@{ticket}" if ticket else self.credential.subject


@dataclass(frozen=True)
class Unattributed:
    """A readable command without a credential that establishes its actor."""

    command: TicketCommand | AgentCommand
    detail: str


def attribute(
    verifier: CommandVerifier, record: Record, command: TicketCommand | AgentCommand | Unreadable
) -> Attributed | Unattributed | Unreadable:
    """Check the record's credential; the command then acts as the credential's subject."""
    if isinstance(command, Unreadable):
        return command
    try:
        credential = verifier.authenticate(record.headers, record.value)
    except Unauthenticated as refused:
        return Unattributed(command, refused.detail)
    if command.actor is not None and command.actor != credential.subject:
        return Unattributed(
            command, f"signed for {credential.subject!r}, but names actor {command.actor!r}"
        )
    return Attributed(command.model_copy(update={"actor": credential.subject}), credential)


def refusal(attributed: Attributed, *, now: datetime, max_ttl: timedelta) -> CommandRefusal | None:
    """Why the credential does not carry this command now, or None when it does."""
    credential, command = attributed.credential, attributed.command
    try:
        credential.check_time(now, max_ttl)
    except Unauthenticated as refused:
        return CommandRefusal(UNAUTHENTICATED, refused.detail)
    if credential.kind == "channel":
        return CommandRefusal(NOT_PERMITTED, "a channel client's token posts requests only")
    if credential.kind != "customer":
        return None
    if isinstance(command, AGENT_COMMAND_TYPES):
        return CommandRefusal(NOT_PERMITTED, "a customer token acts on tickets only")
    return _customer_refusal(command, credential)


def _customer_refusal(command: TicketCommand, credential: Credential) -> CommandRefusal | None:
    """What a customer token may do: its one ticket, the command types it lists."""
    if command.ticket_number != credential.ticket:
        return CommandRefusal(NOT_PERMITTED, f"this customer token is for {credential.ticket}")
    if command.type not in credential.commands:
        return CommandRefusal(NOT_PERMITTED, f"this customer token does not allow {command.type}")
    return None

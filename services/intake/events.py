"""Events intake records (and publishes): the public contract of ``intake.events`` and
``requests.rejected``. Other services import this module to read them; nothing else of intake."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.intake import contract
from services.intake.contract import Reason
from services.vocabulary import Category, Channel, ComplaintSeverity, Complexity, Priority
from shared.events import EventData, Moment, event
from shared.personal import OptionalPersonalText, PersonalText

EVENTS_TOPIC = "intake.events"
MARKS_TOPIC = "intake.marks"
"""intake's relay: "every event stamped before T is on ``intake.events``" (``shared.relay``):
dispatch settles quiet tickets only once it has read past a customer's reply in time."""
REJECTIONS_TOPIC = "requests.rejected"
INCOMING_TOPIC = contract.INCOMING_TOPIC
"""Where channel adapters publish requests (the contract: :mod:`services.intake.contract`)."""


def ticket_stream(ticket_id: str) -> str:
    """A ticket's stream, in intake's store and in every other service's that keeps one: intake
    gives tickets their ids, the others name their streams after them."""
    return f"ticket-{ticket_id}"


class CustomerDetails(BaseModel):
    """Who asked. Personal fields are sealed under the customer's data key (``ref`` names it:
    a pseudonym, the same for every request of the same customer until they are erased)."""

    model_config = ConfigDict(frozen=True)

    name: PersonalText
    email: OptionalPersonalText = None
    phone: OptionalPersonalText = None
    customer_id: OptionalPersonalText = None
    ref: str | None = Field(
        default=None, description="The customer's pseudonym (their data key's reference)."
    )
    language: str | None = None
    tier: str | None = None


class AttachmentRef(BaseModel):
    """A file the customer sent, by reference: its name and address are theirs (a file name
    often names its owner; an address may carry a token), so both are sealed."""

    model_config = ConfigDict(frozen=True)

    name: PersonalText
    size: int
    content_type: str
    url: PersonalText


@event("servicedesk.ticket.received", version=1)
class TicketReceived(EventData):
    """A request was recorded as a new ticket, with everything the customer sent."""

    ticket_id: str
    number: str
    channel: Channel
    channel_message_id: str
    received_at: Moment
    customer: CustomerDetails
    subject: PersonalText
    description: PersonalText
    product_line: str | None = None
    problem_type: str | None = None
    priority: Priority
    language: str
    attachments: list[AttachmentRef] = Field(default_factory=list)
    follows_up: str | None = None
    """The number of the ticket this one follows up: the customer wrote on it when it could no
    longer be reopened (closed, or resolved longer ago than the reopen window)."""


@event("servicedesk.ticket.triaged", version=1)
class TicketTriaged(EventData):
    """Preliminary judgement: complexity, category, complaint flag, and why."""

    ticket_id: str
    number: str
    complexity: Complexity
    category: Category
    complaint: bool
    complaint_severity: ComplaintSeverity
    rule: str
    matched: list[str]
    reason: str
    policy_version: str
    channel: Channel
    priority: Priority
    language: str
    product_line: str | None = None
    problem_type: str | None = None
    customer_tier: str | None = None
    subject: PersonalText
    received_at: Moment
    customer_key: str | None = None
    """Who the customer is across tickets: their pseudonym (``cust-…``, the data subject's
    reference: by customer id, else email, else phone). Dispatch keeps flags on customers by it;
    it names no one, and once the customer is erased nothing links it to them."""
    follows_up: str | None = None
    """The number of the ticket this one follows up (as on its receipt): dispatch routes it
    back to that ticket's last agent when they can take it."""


@event("servicedesk.ticket.customer_replied", version=1)
class CustomerReplied(EventData):
    """The customer wrote again about an existing ticket (``reply_to_ticket``)."""

    ticket_id: str
    number: str
    channel: Channel
    channel_message_id: str
    received_at: Moment
    subject: PersonalText
    body: PersonalText
    attachments: list[AttachmentRef] = Field(default_factory=list)


@event("servicedesk.ticket.follow_up_opened", version=1)
class FollowUpOpened(EventData):
    """A new ticket was opened from the customer's reply to this one (dispatch asked for it:
    ``servicedesk.ticket.follow_up_requested``); the new ticket's receipt names this one."""

    ticket_id: str
    number: str
    follow_up_ticket_id: str
    follow_up_number: str
    request_event_id: str


class RejectedSource(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int


@event("servicedesk.request.rejected", version=1)
class RequestRejected(EventData):
    """A record on ``requests.incoming`` was not a valid request; nothing was recorded for it."""

    reason: str = Field(description=f"Reason code: one of {', '.join(sorted(Reason.all()))}.")
    field: str
    message: str
    problems: list[str] = Field(default_factory=list)
    channel: str | None = None
    channel_message_id: str | None = None
    source: RejectedSource
    original_size: int
    original_preview: PersonalText
    """The first bytes of the record as text (undecodable bytes replaced); sealed, for they are
    a customer's data: under the customer's key when the record names one, else its own."""
    original_base64: PersonalText
    """The same first bytes, exactly (sealed alike)."""
    customer_ref: str | None = Field(
        default=None, description="Pseudonym of the data subject the preview is sealed for."
    )
    truncated: bool


def customer_stream(ref: str) -> str:
    """A data subject's own stream (its erasure), named after its pseudonym."""
    return f"customer-{ref}"


@event("servicedesk.customer.erased", version=1)
class CustomerErased(EventData):
    """A customer's data key was destroyed (``desk customer erase``): every personal field
    sealed under ``ref`` — in any store, topic, dead letter or backup — is unreadable from now
    on. Read models holding opened copies of them drop those copies."""

    ref: str
    erased_at: Moment
    erased_by: str
    reason: str = ""


PUBLISHES: dict[str, tuple[type[EventData], ...]] = {
    EVENTS_TOPIC: (TicketReceived, TicketTriaged, CustomerReplied, FollowUpOpened, CustomerErased),
    # Rejections answer the adapters on their own topic.
    REJECTIONS_TOPIC: (RequestRejected,),
}
"""What intake publishes, by topic: its service declares it, and the registry derives from every
service's the catalogue of who owns which event type."""

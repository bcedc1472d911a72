"""Personal data in the console: the customer's name and contacts, the subject and description
of a request, and what people wrote (replies, messages, notes, survey comments).

This is the only module that puts such a field into the console's tables or takes one out:
projections store them with the ``stored_*`` functions, the API and pages read them with
:func:`customer` and :func:`text`. The events carry them sealed per customer (crypto-shredding,
:mod:`shared.personal`): the read models open a batch's events with the customers' keys first
(:func:`opened`), so an erased customer's fields read "erased" — when the erasure arrives, and
in any rebuild after it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

from services.intake.events import CustomerDetails
from shared.database import Connection
from shared.eventstore import RecordedEvent
from shared.keystore import KeyStore
from shared.personal import ERASED, Erased, keys_for


@dataclass(frozen=True)
class Customer:
    """Who asked, and how to reach them."""

    name: str
    email: str | None
    phone: str | None
    customer_id: str | None
    tier: str | None


async def opened(
    conn: Connection, keys: KeyStore, events: Sequence[RecordedEvent]
) -> list[RecordedEvent]:
    """``events`` with their sealed fields opened (one look-up of keys for the batch)."""
    decoded = [e.decode() for e in events]
    opening = await keys_for(keys, conn, decoded)
    return [replace(e, typed=opening.reveal(d)) for e, d in zip(events, decoded, strict=True)]


async def forget(conn: Connection, refs: Sequence[str]) -> None:
    """An erased customer's data out of the read models: what was opened from their sealed
    fields (before the key was destroyed) becomes "erased", as a rebuild would make it. The
    messages kept for their channel client go: sealed under the destroyed key, they could only
    ever read "erased", and an operational copy is not kept past the data it copies (the
    policy's ``intake.retention`` erases customers the same way)."""
    if not refs:
        return
    await conn.execute(
        "DELETE FROM channel_messages m USING tickets t WHERE m.number = t.number "
        "AND t.customer::json->>'ref' = ANY($1::text[])",
        list(refs),
    )
    await conn.execute(
        "WITH gone AS (UPDATE tickets SET customer_key = 'ref:' || (customer::json->>'ref'), "
        "customer = json_build_object('name', $2::text, 'ref', customer::json->>'ref')::text, "
        "subject = $2, description = $2, satisfaction_comment = "
        "CASE WHEN satisfaction_comment IS NULL THEN NULL ELSE $2 END "
        "WHERE customer::json->>'ref' = ANY($1::text[]) RETURNING ticket_id) "
        "UPDATE timeline SET said = $2 WHERE said IS NOT NULL "
        "AND ticket_id IN (SELECT ticket_id FROM gone)",
        list(refs),
        str(ERASED),
    )


def customer_key(details: CustomerDetails) -> str | None:
    """What ties a customer's tickets together (their history): the adapter's customer id, else
    the email address, else the phone number; an erased customer's pseudonym."""
    if details.ref and any(isinstance(v, Erased) for v in (details.name, details.email)):
        return f"ref:{details.ref}"
    if details.customer_id:
        return f"id:{details.customer_id}"
    if details.email:
        return f"email:{details.email.lower()}"
    return f"phone:{details.phone}" if details.phone else None


def history_key(customer: str) -> list[str]:
    """The keys a ``customer`` filter of the API may mean: an id, an email or a phone number."""
    value = customer.strip()
    return [f"id:{value}", f"email:{value.lower()}", f"phone:{value}"]


def stored_customer(details: CustomerDetails) -> str:
    return json.dumps(
        {
            "name": details.name,
            "email": details.email,
            "phone": details.phone,
            "customer_id": details.customer_id,
            "tier": details.tier,
            "ref": details.ref,
        },
        ensure_ascii=False,
    )


def customer(stored: str | None) -> Customer | None:
    if not stored:
        return None
    fields = json.loads(stored)
    return Customer(
        name=fields.get("name") or "",
        email=fields.get("email"),
        phone=fields.get("phone"),
        customer_id=fields.get("customer_id"),
        tier=fields.get("tier"),
    )


def stored_text(value: str | None) -> str | None:
    """A subject, description or anything someone wrote, as the tables keep it."""
    return value


def text(stored: str | None) -> str | None:
    """The same, to show to someone allowed to see the ticket."""
    return stored

"""Personal data in the console: the customer's name and contacts, the subject and description
of a request, and what people wrote (replies, messages, notes, survey comments).

This is the only module that puts such a field into the console's tables or takes one out:
projections store them with the ``stored_*`` functions, the API and pages read them with
:func:`customer` and :func:`text`. Today the events carry them in clear text and they are kept as
they came. When the events carry them encrypted per customer (crypto-shredding), these functions
are where the console decrypts them, through the kernel's helper, and where a shredded customer's
fields become unreadable; no other module changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from services.intake.events import CustomerDetails


@dataclass(frozen=True)
class Customer:
    """Who asked, and how to reach them."""

    name: str
    email: str | None
    phone: str | None
    customer_id: str | None
    tier: str | None


def customer_key(details: CustomerDetails) -> str | None:
    """What ties a customer's tickets together (their history): the adapter's customer id, else
    the email address, else the phone number."""
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

"""Notices as ``deliveries`` keeps them: sealed under the ticket's customer until they are sent.

A notice's text names the customer and repeats what they wrote. Kept in clear in
``deliveries``, it would outlive ``desk customer erase`` — in a pending notice still to be sent,
and in every sent one. So it is stored sealed for the customer's pseudonym (its address too when
it goes to the customer), opened as it is claimed for sending. A notice to the customer who was
erased meanwhile is not sent: it fails as :data:`ERASED_REASON`. One to the desk's people (an
assignment, an escalation) still goes, as it would have read had the erasure come first: it is
rendered that way too when made (each part of it that reads the customer's data, with "erased"
in its place: :func:`as_if_erased`) and kept beside, in clear — it holds nothing of theirs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from services.notify.rules import Notice, NoticeFacts
from services.notify.storage import Delivery
from shared.personal import ERASED, DataKeys, Erased, from_column, ref_in, to_column

ERASED_REASON = "erased"
"""Why a notice kept for a customer whose data was erased before it went out fails."""
ERASED_ERROR = "the customer's personal data was erased before the notice was sent"


def withheld(
    notices: Sequence[Notice], facts: Mapping[str, NoticeFacts], keys: DataKeys
) -> list[Notice]:
    """The notices, those to a customer already erased failed :data:`ERASED_REASON` before
    any is kept: an erased customer is not written to again (an agent's reply after the
    erasure went out as a message reading "erased", to someone who asked to be forgotten).
    Notices to the desk's people about the ticket go out as ever."""
    out: list[Notice] = []
    for notice in notices:
        ref = _customer_ref(notice, facts)
        if notice.recipient != "customer" or notice.failure or ref is None or keys.holds(ref):
            out.append(notice)
            continue
        out.append(
            replace(
                notice,
                address=ERASED,
                subject=ERASED,
                body=ERASED,
                failure=ERASED_REASON,
                error=ERASED_ERROR,
            )
        )
    return out


def kept(
    notices: Sequence[Notice], facts: Mapping[str, NoticeFacts], keys: DataKeys
) -> list[Notice]:
    """The notices as ``deliveries`` keeps them: their subject and body (a customer's notice:
    its address too) sealed for the ticket's customer — one that cannot be sent as well: its row
    still holds what it would have said. A ticket without a sealed customer (made before
    sealing) or one already erased keeps what it has: nothing personal is left to seal."""
    out: list[Notice] = []
    for notice in notices:
        ref = _customer_ref(notice, facts)
        if ref is None or not keys.holds(ref):
            out.append(notice)
            continue

        def seal(text: str, ref: str = ref) -> str:
            return to_column(keys.seal_text(ref, text))

        address = notice.address
        if notice.recipient == "customer" and address is not None:
            address = seal(address)
        out.append(
            replace(notice, subject=seal(notice.subject), body=seal(notice.body), address=address)
        )
    return out


def as_if_erased(
    ticket: NoticeFacts, data: dict[str, Any], keys: DataKeys
) -> dict[str, Any] | None:
    """An event's ``data`` (as published) as it reads once the customer of ``ticket`` (as kept)
    is erased: every sealed field :data:`ERASED` (the notice's rules read the ticket's subject
    and the customer's name as erased beside it). None when the customer is not sealed under a
    key held here (made before sealing, or erased already: the notices are made from that
    already)."""
    ref = ref_in(ticket.customer_name)
    if ref is None or not keys.holds(ref):
        return None
    erased: dict[str, Any] = _NO_KEYS.reveal_json(data)
    return erased


_NO_KEYS = DataKeys({})
"""Keys of nobody: every sealed field opens as erased."""


def opened(deliveries: Sequence[Delivery], keys: DataKeys) -> tuple[list[Delivery], list[Delivery]]:
    """The claimed notices opened to send (first), and those whose customer was erased since
    they were kept (second): these are never sent. A notice to someone else whose customer was
    erased is sent as it reads after the erasure (:attr:`Delivery.erased_subject`)."""
    sendable: list[Delivery] = []
    erased: list[Delivery] = []
    for delivery in deliveries:
        sealed = from_column(delivery.subject)
        address, subject, body = (
            keys.open_text(t)
            for t in (from_column(delivery.address), sealed, from_column(delivery.body))
        )
        ref = ref_in(sealed)
        if not any(isinstance(t, Erased) for t in (address, subject, body)):
            sendable.append(
                replace(delivery, address=address, subject=subject, body=body, customer_ref=ref)
            )
        elif (
            delivery.erased_subject is not None
            and delivery.erased_body is not None
            and not isinstance(address, Erased)
        ):
            subject, body = delivery.erased_subject, delivery.erased_body
            sendable.append(
                replace(delivery, address=address, subject=subject, body=body, customer_ref=ref)
            )
        else:
            erased.append(replace(delivery, address=ERASED, subject=ERASED, body=ERASED))
    return sendable, erased


def sealed_columns(deliveries: Sequence[Delivery]) -> list[str]:
    """What claimed notices keep sealed (for :func:`~shared.personal.keys_for`)."""
    return [from_column(c) for d in deliveries for c in (d.address, d.subject, d.body)]


def _customer_ref(notice: Notice, facts: Mapping[str, NoticeFacts]) -> str | None:
    """The pseudonym of the customer of ``notice``'s ticket (None: not sealed, made before)."""
    ticket = facts.get(notice.ticket_id)
    return ref_in(ticket.customer_name) if ticket is not None else None

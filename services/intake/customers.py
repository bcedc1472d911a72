"""Customers as data subjects: who each request's personal data belongs to, and its sealing.

Intake meets every customer first, so it gives each one a pseudonym and a data key
(:mod:`shared.keystore`) and seals the personal fields of every event it records about them
(:mod:`shared.personal`) before they reach its store or a topic. The subject is the customer id
when the adapter sends one, else the normalised contact address. A refused record's bytes are a
customer's data too: sealed under the customer they name, if any can be read, else under a
subject of their own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from services.intake.contract import MAX_MESSAGE_BYTES, Customer, Request
from services.intake.events import AttachmentRef
from shared.database import Connection
from shared.keystore import KeyStore, SubjectKey, identity_of
from shared.personal import DataKeys

M = TypeVar("M", bound=BaseModel)


def identity(customer: Customer) -> str:
    """The data subject of a valid request's customer (who always has an address)."""
    found = identity_of(customer.customer_id, customer.email, customer.phone)
    if found is None:  # the contract refuses a customer without either
        raise ValueError("a customer without an id, an e-mail address or a phone number")
    return found


class Customers:
    """The data subjects of one batch's requests, with their keys: made when first met."""

    def __init__(self, subjects: dict[str, SubjectKey]) -> None:
        self._subjects = subjects
        self._keys = DataKeys({s.ref: s.key for s in subjects.values()})

    @classmethod
    async def of(
        cls, store: KeyStore, conn: Connection, customers: Iterable[Customer]
    ) -> Customers:
        return cls(await store.subjects(conn, [identity(c) for c in customers]))

    def ref(self, customer: Customer) -> str:
        return self._subjects[identity(customer)].ref

    def seal(self, customer: Customer, event: M) -> M:
        """``event`` with its personal fields sealed under ``customer``'s key (those already
        sealed as they are)."""
        return self._keys.seal(event, self.ref(customer))

    def sealed(self, request: Request) -> SealedTexts:
        """``request``'s personal texts sealed under its customer's key, for the events of its
        ticket to be built from: each text is encrypted once, not once per event that repeats
        it, and no event is walked to find them (intake's store refuses any left in clear).
        Never for triage or comparisons: they need the text."""
        customer = request.customer
        ref = self.ref(customer)
        seal = self._keys.sealer(ref)
        email, phone, customer_id = customer.email, customer.phone, customer.customer_id
        return SealedTexts(
            ref=ref,
            name=seal(customer.name),
            email=None if email is None else seal(email),
            phone=None if phone is None else seal(phone),
            customer_id=None if customer_id is None else seal(customer_id),
            subject=seal(request.subject),
            description=seal(request.description),
            attachments=[
                AttachmentRef(
                    name=seal(a.name),
                    size=a.size,
                    content_type=a.content_type,
                    url=seal(a.url),
                )
                for a in request.attachments
            ],
        )


@dataclass(slots=True)
class SealedTexts:
    """A request's personal fields, sealed under its customer's key (``ref``)."""

    ref: str
    name: str
    email: str | None
    phone: str | None
    customer_id: str | None
    subject: str
    description: str
    attachments: list[AttachmentRef]


async def rejected_subject(store: KeyStore, conn: Connection, value: bytes) -> SubjectKey:
    """Whom a refused record's bytes belong to: the customer it names, when its JSON can be read
    that far, else a subject of its own."""
    named = _named_identity(value)
    if named is not None:
        return (await store.subjects(conn, [named]))[named]
    return await store.anonymous(conn)


def seal_for(subject: SubjectKey, event: M) -> M:
    return DataKeys({subject.ref: subject.key}).seal(event, subject.ref)


def _named_identity(value: bytes) -> str | None:
    if len(value) > MAX_MESSAGE_BYTES:
        return None
    try:
        document: Any = json.loads(value)
    except (ValueError, RecursionError):
        return None
    customer = document.get("customer") if isinstance(document, dict) else None
    if not isinstance(customer, dict):
        return None
    fields = [customer.get(f) for f in ("customer_id", "email", "phone")]
    customer_id, email, phone = (
        f.strip() if isinstance(f, str) and f.strip() else None for f in fields
    )
    return identity_of(customer_id, email, re.sub(r"[\s().-]", "", phone) if phone else None)

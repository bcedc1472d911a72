"""What operators' tools read of intake's tables (``desk ticket show``, ``desk triage review``,
``desk customer export``) and the one thing they do there: erase a customer's data."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import ValidationError

from services.intake.contract import Customer
from services.intake.events import CustomerErased, TicketReceived, TicketTriaged, customer_stream
from services.intake.review import RuleReview, Triaged, review
from shared.database import Connection, identifier
from shared.deadletter import DeadLetter, ErasedDeadLetter, original_value, sealed_for
from shared.eventstore import ANY_VERSION, EventStore, PendingEvent
from shared.keystore import KEY_HOLDER, KeyStore, identity_of
from shared.personal import ERASED, Erased, keys_for

__all__ = ["RuleReview", "customer_data", "erase_customer", "ticket_id", "triage_review"]


async def ticket_id(conn: Connection, number: str) -> str | None:
    """The id of the ticket with this number; None if intake has none (or no tables yet)."""
    if await conn.fetchval("SELECT to_regclass('intake.tickets')") is None:
        return None
    found = await conn.fetchval(
        "SELECT ticket_id::text FROM intake.tickets WHERE number = $1", number
    )
    return str(found) if found else None


async def triage_review(
    conn: Connection, since: datetime, corrections: Mapping[str, str], keys: KeyStore
) -> list[RuleReview]:
    """Each triage rule's tickets since ``since``, against agents' corrections (ticket id ->
    what it was corrected to: dispatch's reclassifications). The texts are opened with the
    customers' keys (an erased customer's count, their words do not)."""
    if await conn.fetchval("SELECT to_regclass('intake.events')") is None:
        return []
    rows = await conn.fetch(
        "SELECT subject, type, envelope->>'data' FROM intake.events "
        "WHERE type = ANY($1::text[]) AND occurred_at >= $2 ORDER BY position",
        [TicketReceived.event_type(), TicketTriaged.event_type()],
        since,
    )
    texts: dict[str, str] = {}
    rules: dict[str, str] = {}
    documents = [(subject, kind, json.loads(data)) for subject, kind, data in rows]
    opening = await keys_for(keys, conn, [d for _, _, d in documents])
    for subject, kind, found in documents:
        if kind == TicketTriaged.event_type():
            rules[subject] = found["rule"]
        else:
            text = opening.reveal_json({"s": found["subject"], "d": found["description"]})
            texts[subject] = (
                ""
                if any(isinstance(v, Erased) for v in text.values())
                else f"{text['s']}\n{text['d']}"
            )
    tickets = (Triaged(t, rule, texts.get(t, "")) for t, rule in rules.items())
    return review(tickets, corrections)


async def erase_customer(
    conn: Connection, keys: KeyStore, ref: str, now: datetime, *, by: str, reason: str = ""
) -> bool:
    """Destroy the customer's data key and record ``servicedesk.customer.erased`` in intake's
    store (``desk customer erase``; in the caller's transaction). False when the pseudonym is
    unknown or was erased before."""
    if not await keys.erase(conn, ref, now):
        return False
    erased = CustomerErased(ref=ref, erased_at=now, erased_by=by, reason=reason)
    store = EventStore(KEY_HOLDER, f"servicedesk/{KEY_HOLDER}")
    pending = PendingEvent(erased, now, correlation_id=customer_stream(ref))
    await store.append(conn, customer_stream(ref), ANY_VERSION, [pending])
    return True


async def customer_data(
    conn: Connection, keys: KeyStore, ref: str, services: Sequence[str]
) -> dict[str, Any] | None:
    """Everything held about a customer (``desk customer export``): their key's record and every
    event of every service carrying their pseudonym, opened. None when the key store never knew
    the pseudonym."""
    key = await conn.fetchrow(
        f"SELECT ref, created_at, closed_at, erased_at FROM {keys.table} WHERE ref = $1", ref
    )
    if key is None:
        return None
    events: list[dict[str, Any]] = []
    for name in services:
        events += await _carrying(conn, name, ref)
    opening = await keys_for(keys, conn, [e["data"] for e in events])
    for entry in events:
        entry["data"] = opening.reveal_json(entry["data"])
    letters = []
    for name in services:
        letters += [
            await _opened(conn, keys, letter) for letter in await sealed_for(conn, name, ref)
        ]
    return {"customer": dict(key), "events": events, "dead_letters": letters}


async def _opened(conn: Connection, keys: KeyStore, letter: DeadLetter) -> dict[str, Any]:
    """A dead letter sealed under the customer (a request as the adapter sent it, an agent's
    reply about them), its record opened: "erased" once their key is gone."""
    try:
        record: Any = (await original_value(conn, letter, keys)).decode("utf-8", "replace")
    except ErasedDeadLetter:
        record = ERASED
    return {
        "service": letter.service,
        "id": letter.id,
        "consumer": letter.consumer,
        "source": f"{letter.topic}/{letter.partition}/{letter.offset}",
        "reason": letter.reason,
        "recorded_at": letter.recorded_at.isoformat(),
        "replayed_at": letter.replayed_at.isoformat() if letter.replayed_at else None,
        "record": record,
    }


async def _carrying(conn: Connection, service: str, ref: str) -> list[dict[str, Any]]:
    """A service's events whose envelope names the pseudonym (a sealed field carries it)."""
    try:
        rows = await conn.fetch(
            "SELECT stream_id, type, occurred_at, envelope::text "
            f"FROM {identifier(service)}.events "
            "WHERE strpos(envelope::text, $1) > 0 ORDER BY position",
            f'"{ref}"',
        )
    except asyncpg.UndefinedTableError:
        return []
    return [
        {
            "service": service,
            "stream": r[0],
            "type": r[1],
            "time": r[2].isoformat(),
            "data": json.loads(r[3])["data"],
        }
        for r in rows
    ]


def identities(**given: str | None) -> dict[str, str]:
    """The identity of each of ``customer_id``, ``email`` and ``phone`` given (``desk customer
    find``), read as intake's contract reads a request's customer — an address in capitals or
    another Unicode form, a phone number with spaces or dashes, an id with spaces around it —
    since that is the form intake looked its customers up by. ValueError, naming the option,
    for one the contract refuses."""
    wanted = {field: value for field, value in given.items() if value is not None}
    if not wanted:
        return {}
    # The contract also wants a way to reach the customer, which a look-up by id needs not.
    reachable = {} if {"email", "phone"} & wanted.keys() else {"phone": "+10000000000"}
    try:
        customer = Customer.model_validate({"name": "-", **reachable, **wanted})
    except ValidationError as error:
        first = error.errors(include_input=False, include_url=False)[0]
        where = "".join(f"--{str(p).replace('_', '-')}: " for p in first["loc"][:1])
        raise ValueError(f"{where}{first['msg']}") from None
    made = {
        "customer_id": identity_of(customer.customer_id, None, None),
        "email": identity_of(None, customer.email, None),
        "phone": identity_of(None, None, customer.phone),
    }
    return {field: identity for field, identity in made.items() if field in wanted and identity}

"""The HTTP channel: ``POST /requests``, customers' requests from web forms and API clients.

A channel adapter like ``desk adapter email``, served by the console. The body is a request of
intake's ``requests.incoming`` contract — checked with the very model intake validates with
(:mod:`services.intake.contract`) — less what the channel fills in itself: ``channel_message_id``
(made here; the 202 answers it) and ``received_at`` (the console's clock when it took the
request: here the console is the channel, and a client's word for it would let a web form start
a ticket's SLA clocks days ago, breached and escalated at once). A body naming either is refused
(422 ``unknown_field``). It is published to ``requests.incoming`` and answered once the broker
has it. What intake would refuse is refused here, with intake's reason code, before anything is
published: 422 (unreadable JSON 400; a body over ``console_max_body`` 413, before it is read).
Only ``web`` and ``api`` are served here (422 ``channel_not_served``): email, phone and chat have
adapters of their own. A reply names its conversation in ``in_reply_to`` (the id the first
request was answered with), never a ticket number: ``reply_to_ticket`` is 422
``reply_by_conversation`` — a web form vouches for no address, so a number and the customer's
e-mail would reply to anyone's ticket.

Who may post: a channel client's token, subject ``channel:<name>`` (``desk token issue
channel:webform``); an agent's or customer's token is 403. That subject — never the body — keys
the rate limit (:mod:`.allowance`: 429 with ``Retry-After``) and the ``Idempotency-Key``s: a key
seen before with the same body answers the id it was given then and publishes nothing (kept in
PostgreSQL: a restart changes nothing); with another body it is 422 ``idempotency_key_reused``.
Keys are forgotten after ``console_idempotency_retention`` (:func:`forget_keys`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, NoReturn, get_args

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Header
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import TypeAdapter

from services.console.allowance import Allowance, retry_after
from services.console.api import ApiError, Console, identify, problems, sending
from services.console.callers import bearer
from services.console.contract import RequestAccepted
from services.console.settings import ConsoleSettings
from services.intake.contract import (
    INCOMING_TOPIC,
    Reason,
    Refusal,
    Request,
    read_document,
    validate_request,
)
from services.vocabulary import Channel
from shared.credentials import Credential, Unauthenticated
from shared.database import Connection
from shared.durations import format_duration
from shared.events import format_time
from shared.logging import get_logger
from shared.service import Service, Worker, every

log = get_logger(__name__)
TAKEN = Counter(
    "desk_console_requests_total",
    "Requests posted to the HTTP channel, by outcome (published, replayed, refused) and reason.",
    ["outcome", "reason"],
)
CHANNEL_NOT_SERVED = "channel_not_served"
SERVED = ("web", "api")
"""The channels this adapter is: a web form's or an API client's. Email, phone and chat have
adapters of their own, which know their senders and threads (a web form's token posting as
``phone`` would make a caller out of any number)."""
REPLY_BY_CONVERSATION = "reply_by_conversation"
IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
TOO_MANY_REQUESTS = "too_many_requests"
FILLED_IN = {
    "channel_message_id": "the channel makes the message id; send an Idempotency-Key to retry "
    "safely",
    "received_at": "the channel receives the request: its time is the console's clock",
}
"""What the channel makes itself, and why: a body naming one is refused (``unknown_field``)."""
_UNREADABLE = {Reason.INVALID_JSON: 400, Reason.INVALID_ENCODING: 400}
_TOO_LARGE = {Reason.MESSAGE_TOO_LARGE: 413}


def inbox(app: FastAPI, console: Console, settings: ConsoleSettings) -> None:
    """Add ``POST /requests`` to the console's app."""
    allowance = Allowance(settings.console_requests_limit, settings.console_requests_window)
    topic = settings.topic(INCOMING_TOPIC)
    pace = (
        f"{settings.console_requests_limit} per {format_duration(settings.console_requests_window)}"
    )

    @app.post(
        "/requests",
        status_code=202,
        response_model=RequestAccepted,
        summary="A customer's request (or reply) from a web form or an API client.",
        description="The body is a request of the requests.incoming contract (README) without "
        "`channel_message_id`, which the channel makes and answers, and `received_at`, the "
        "console's clock when it takes the request (either in the body: 422 `unknown_field`). "
        "Only a channel client's token (`desk token issue channel:NAME`). An "
        "`Idempotency-Key` header makes a retry safe: the same key and body answer the same id "
        "and publish nothing. 202: on its way to intake.",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request_schema()}},
            }
        },
        responses=problems(
            {
                400: "Not JSON.",
                401: "No token, or not a valid one now.",
                403: "Not a channel client's token.",
                413: "Body too large.",
                422: "Not a request intake would take: intake's reason code, and the field.",
                429: "Over the client's rate; Retry-After says when to try again.",
                503: "The broker did not take it; retry (with the same Idempotency-Key).",
            }
        ),
    )
    async def post_request(
        request: HttpRequest,
        authorization: Annotated[str | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
    ) -> JSONResponse:
        service = console.service
        # Signature, claims and kind first, holding nothing: a forged token, or a person's,
        # takes no slot.
        credential = identify_client(console, bearer(authorization))
        async with sending(console), service.pool.acquire() as conn:
            now = await service.clock.now(conn)
            client = client_of(console, credential, now)
            wait = allowance.take(client)
            if wait:
                TAKEN.labels("refused", TOO_MANY_REQUESTS).inc()
                raise ApiError(
                    429,
                    TOO_MANY_REQUESTS,
                    f"at most {pace} for {client}",
                    {"Retry-After": retry_after(wait)},
                )
            document = _document(await request.body())
            claim = (
                Claim(client, idempotency_key, _fingerprint(document)) if idempotency_key else None
            )
            if claim is not None and (known := await _known(conn, claim)) is not None:
                return _accepted(*known, replayed=True)
            shaped, filled = _shape(document, now)
            try:
                known = await _publish(
                    conn, service.producer, topic, shaped, filled, (client, claim), now
                )
            except (TimeoutError, OSError, KafkaError) as error:
                log.warning("request not published", error=repr(error), client=client)
                raise ApiError(
                    503, "broker_unavailable", "the request could not be sent; retry"
                ) from None
            if known is not None:
                return _accepted(*known, replayed=True)
        TAKEN.labels("published", "").inc()
        log.info(
            "request published",
            client=client,
            channel=shaped.channel,
            channel_message_id=shaped.channel_message_id,
            reply_to_ticket=shaped.reply_to_ticket,
        )
        return _accepted(shaped.channel, shaped.channel_message_id, replayed=False)


def forget_keys(settings: ConsoleSettings) -> Worker:
    """The worker forgetting Idempotency-Keys older than the retention, by the service's clock,
    every ``processed_purge_interval`` (as processed message ids are)."""

    async def idempotency_keys_forgotten(service: Service) -> None:
        async with service.pool.acquire() as conn:
            before = await service.clock.now(conn) - settings.console_idempotency_retention
            if forgotten := await forget_idempotency_keys(conn, before):
                log.info("idempotency keys forgotten", count=forgotten, before=format_time(before))

    return every(settings.processed_purge_interval, idempotency_keys_forgotten)


async def forget_idempotency_keys(conn: Connection, before: datetime) -> int:
    """Delete the keys accepted before ``before``; return how many."""
    forgotten: int = await conn.fetchval(
        "WITH gone AS (DELETE FROM channel_requests WHERE accepted_at < $1 RETURNING 1) "
        "SELECT count(*) FROM gone",
        before,
    )
    return forgotten


def request_schema() -> dict[str, Any]:
    """The body's JSON Schema: intake's contract, without what the channel fills in."""
    schema = TypeAdapter(Request).json_schema(ref_template="#/components/schemas/{model}")
    for name in FILLED_IN:
        schema["properties"].pop(name, None)
    schema["required"] = [r for r in schema.get("required", []) if r not in FILLED_IN]
    return schema


def identify_client(console: Console, token: str | None) -> Credential:
    """:func:`identify`, and 403 for a token that is no channel client's (an agent's, a
    customer's): its kind is in the token, so it is refused before the request takes a sending
    slot or a connection."""
    credential = identify(console, token)
    _check_kind(credential)
    return credential


def client_of(console: Console, credential: Credential, now: datetime) -> str:
    """The channel client an identified token stands for, valid at ``now`` (401, 403)."""
    try:
        console.callers.check_time(credential, now)
    except Unauthenticated as error:
        raise ApiError(401, "unauthenticated", error.detail) from None
    _check_kind(credential)
    return credential.subject


def _check_kind(credential: Credential) -> None:
    """403 unless ``credential`` is a channel client's."""
    if credential.kind != "channel":
        raise ApiError(
            403,
            "forbidden",
            f"not a channel client's token ({credential.kind} {credential.subject!r}): only a "
            "channel client (desk token issue channel:NAME) posts requests and reads their "
            "messages",
        )


def _document(body: bytes) -> dict[str, Any]:
    """The body's JSON object, read as intake reads a record (400, 413, 422)."""
    document = read_document(body)
    if isinstance(document, Refusal):
        _refuse(document)
    for name, why in FILLED_IN.items():
        if name in document:
            _refuse(Refusal(Reason.UNKNOWN_FIELD, name, why))
    channel = document.get("channel")
    if channel in get_args(Channel) and channel not in SERVED:  # an unknown one: intake's code
        _refuse(
            Refusal(
                CHANNEL_NOT_SERVED,
                "channel",
                f"{channel} comes in through its own adapter; this one serves "
                + " and ".join(SERVED),
            )
        )
    if document.get("reply_to_ticket") is not None:
        # A web form vouches for no address: naming a ticket and its customer's e-mail would
        # reply to (and reopen) anyone's. The conversation id the first request was answered
        # with — unguessable, known to that customer's client alone — is the proof.
        _refuse(
            Refusal(
                REPLY_BY_CONVERSATION,
                "reply_to_ticket",
                "a reply names its conversation: in_reply_to with the channel_message_id the "
                "first request was answered with, not a ticket number",
            )
        )
    return document


def _shape(document: dict[str, Any], now: datetime) -> tuple[Request, dict[str, Any]]:
    """The request intake will read, as a model and as the document to publish, or the reason
    intake would refuse it (422): received now, by the console's clock, with a fresh id."""
    filled = {
        **document,
        "channel_message_id": str(uuid.uuid4()),
        "received_at": format_time(now),
    }
    checked = validate_request(filled)
    if isinstance(checked, Refusal):
        _refuse(checked)
    return checked, filled


def _refuse(refusal: Refusal) -> NoReturn:
    TAKEN.labels("refused", refusal.reason).inc()
    status = _UNREADABLE.get(refusal.reason) or _TOO_LARGE.get(refusal.reason) or 422
    raise ApiError(status, refusal.reason, refusal.message[:500], field=refusal.field or None)


def _fingerprint(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    """An ``Idempotency-Key`` of one client, with the fingerprint of the body it came with."""

    client: str
    key: str
    fingerprint: str


async def _known(conn: Connection, claim: Claim) -> tuple[str, str] | None:
    """(channel, id) the key was answered with before, if the body is the same (422 if not)."""
    row = await conn.fetchrow(
        "SELECT channel, channel_message_id, fingerprint FROM channel_requests "
        "WHERE client = $1 AND idempotency_key = $2",
        claim.client,
        claim.key,
    )
    if row is None:
        return None
    if row["fingerprint"] != claim.fingerprint:
        TAKEN.labels("refused", IDEMPOTENCY_KEY_REUSED).inc()
        raise ApiError(
            422,
            IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key came with another body; a new request needs a new key",
        )
    TAKEN.labels("replayed", "").inc()
    return row["channel"], row["channel_message_id"]


async def _publish(  # noqa: PLR0917 - private; the one call site names them
    conn: Connection,
    producer: AIOKafkaProducer,
    topic: str,
    request: Request,
    document: dict[str, Any],
    sender: tuple[str, Claim | None],
    now: datetime,
) -> tuple[str, str] | None:
    """Record the key's id and whose conversation it opens, and publish, in one transaction: a
    broker that does not take the request undoes the key (the retry publishes), and a concurrent
    request with the same key waits on it and then answers this one's id (returned: nothing was
    published). Should the commit fail after the broker took it, a retry publishes again — a
    duplicate, never a loss."""
    client, claim = sender
    async with conn.transaction():
        if claim is not None:
            inserted = await conn.fetchval(
                "INSERT INTO channel_requests (client, idempotency_key, channel_message_id, "
                "channel, fingerprint, accepted_at) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (client, idempotency_key) DO NOTHING RETURNING true",
                claim.client,
                claim.key,
                request.channel_message_id,
                request.channel,
                claim.fingerprint,
                now,
            )
            if not inserted:
                return await _known(conn, claim)
        await record_conversation(conn, request.channel_message_id, client, request.channel, now)
        value = json.dumps(document, ensure_ascii=False).encode()
        await (await producer.send(topic, value=value, key=request.thread_key.encode()))
    return None


async def record_conversation(
    conn: Connection, channel_message_id: str, client: str, channel: str, now: datetime
) -> None:
    """Whose request opened a conversation: only that client reads its messages."""
    await conn.execute(
        "INSERT INTO channel_conversations (channel_message_id, client, channel, accepted_at) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (channel_message_id) DO NOTHING",
        channel_message_id,
        client,
        channel,
        now,
    )


def _accepted(channel: str, channel_message_id: str, *, replayed: bool) -> JSONResponse:
    accepted = RequestAccepted(channel=channel, channel_message_id=channel_message_id)
    headers = {"Idempotency-Replayed": "true"} if replayed else None
    return JSONResponse(accepted.model_dump(), status_code=202, headers=headers)

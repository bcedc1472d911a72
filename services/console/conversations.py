"""The HTTP channel's read side: what the desk sends the customers of web and api requests.

The console is those channels' adapter (:mod:`services.console.inbox` takes their requests), so
it also delivers what notify publishes for them on ``customer.messages``: the acknowledgement
with the ticket's number, agents' replies, the resolution and its survey link. A web form or an
API client cannot read a Kafka topic; it reads them here, ``GET
/requests/{channel_message_id}/messages``, for the requests it posted itself (another client's
conversation is 404, as one that does not exist). Subject and text are kept sealed under the
customer's key and opened as they are read. An erased customer's messages are not kept: the
erasure deletes those already here (:func:`services.console.personal.forget`) and one that
arrives after it (an agent's reply to the open ticket, this consumer behind the others) is
dropped, its key gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import FastAPI, Header, Path, Query

from services.console.api import ApiError, Console, problems
from services.console.callers import bearer
from services.console.contract import ChannelMessage, ChannelMessagePage
from services.console.inbox import SERVED, client_of, identify_client
from services.notify.events import MESSAGES_TOPIC, CustomerMessage
from shared.consumer import Delivered, EventSubscription, Inbound
from shared.keystore import KeyStore
from shared.personal import DataKeys, Sealed, from_column, keys_for, to_column
from shared.unit_of_work import UnitOfWork

PAGE = 100
"""Messages one read answers at most."""


class ChannelMessages(EventSubscription):
    """notify's messages for the customers of the channels the console serves."""

    name = "channel_messages"
    topics = (MESSAGES_TOPIC,)
    description = "Messages for web and api customers, kept for their channel client to read."
    accepts = (CustomerMessage.event_name,)

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[Delivered]]) -> None:
        served = [
            (data, m.message.envelope.time)
            for m in messages
            if isinstance(data := m.message.data, CustomerMessage) and data.channel in SERVED
        ]
        if not served:
            return
        opening = await keys_for(self.keys, uow.conn, [data for data, _ in served])
        rows = [
            (
                data.notice_key,
                data.conversation,
                data.number,
                data.template,
                data.language,
                to_column(data.subject),
                to_column(data.text),
                sent_at,
            )
            for data, sent_at in served
            if readable(data, opening)
        ]
        if rows:
            await uow.conn.executemany(
                "INSERT INTO channel_messages (notice_key, conversation, number, template, "
                "language, subject, text, sent_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                "ON CONFLICT (notice_key) DO NOTHING",
                rows,
            )


def readable(message: CustomerMessage, keys: DataKeys) -> bool:
    """Whether ``keys`` still open what ``message`` says (its subject and text in clear — old
    events —, or sealed under a key not destroyed)."""
    return all(
        not isinstance(field, Sealed) or keys.holds(field.ref)
        for field in (message.subject, message.text)
    )


def conversations(app: FastAPI, console: Console, keys: KeyStore) -> None:
    """Add ``GET /requests/{channel_message_id}/messages`` to the console's app."""

    @app.get(
        "/requests/{channel_message_id}/messages",
        response_model=ChannelMessagePage,
        summary="What the desk sent the customer of a request this client posted.",
        description="The messages on `customer.messages` for a web or api request — the "
        "acknowledgement with its ticket number, agents' replies, the resolution with its "
        "survey link — oldest first, from `after`. `channel_message_id` is the one `POST "
        "/requests` answered for the request that opened the ticket. Only the channel client "
        "that posted it (its token); any other id is 404.",
        responses=problems(
            {
                401: "No token, or not a valid one now.",
                403: "Not a channel client's token.",
                404: "No conversation of this client has this id.",
            }
        ),
    )
    async def messages(
        channel_message_id: Annotated[str, Path(max_length=200)],
        authorization: Annotated[str | None, Header()] = None,
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=PAGE)] = PAGE,
    ) -> ChannelMessagePage:
        service = console.service
        credential = identify_client(console, bearer(authorization))  # before any connection
        async with service.pool.acquire() as conn:
            client = client_of(console, credential, await service.clock.now(conn))
            owner = await conn.fetchval(
                "SELECT client FROM channel_conversations WHERE channel_message_id = $1",
                channel_message_id,
            )
            if owner != client:
                raise ApiError(404, "not_found", "no such conversation of this client")
            rows = await conn.fetch(
                "SELECT position, number, template, language, subject, text, sent_at "
                "FROM channel_messages WHERE conversation = $1 AND position > $2 "
                "ORDER BY position LIMIT $3",
                channel_message_id,
                after,
                limit,
            )
            sealed = [from_column(r[column]) for r in rows for column in ("subject", "text")]
            opening = await keys_for(keys, conn, sealed)
        items = [
            ChannelMessage(
                **{k: r[k] for k in ("position", "number", "template", "language", "sent_at")},
                subject=opening.open_text(from_column(r["subject"])),
                text=opening.open_text(from_column(r["text"])),
            )
            for r in rows
        ]
        return ChannelMessagePage(
            items=items, next=items[-1].position if len(items) == limit else None
        )

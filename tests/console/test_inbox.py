"""The HTTP channel (``POST /requests``) against a served console, the real broker and
PostgreSQL: who may post, what is refused before anything is published, Idempotency-Key replays
across a restart, and the rate per verified client."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services import build_service
from services.console.inbox import forget_idempotency_keys
from services.intake.contract import Request, read_request
from shared.deadletter import Record
from shared.settings import Settings
from tests.conftest import SettingsFactory
from tests.console.support import served
from tests.intake.requests import valid
from tests.support.credentials import token
from tests.support.kafka import KafkaProbe

INCOMING = "requests.incoming"
WEBFORM, PORTAL = "channel:webform", "channel:portal"


def web_request(**changes: Any) -> dict[str, Any]:
    """A web form's request: the contract's, less what the channel fills in."""
    body = valid()
    del body["channel_message_id"], body["received_at"]
    return {**body, "channel": "web", **changes}


class Channel:
    """Clients of a served console's ``POST /requests``, each with its own token."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings, self.url = settings, url

    async def post(
        self, body: dict[str, Any] | bytes, actor: str | None = WEBFORM, **headers: str
    ) -> httpx.Response:
        if actor is not None:
            credential = token(self.settings, actor, ticket="REQ-2026-000001")
            headers["Authorization"] = f"Bearer {credential}"
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(
                f"{self.url}/requests",
                content=content,
                headers={"Content-Type": "application/json", **headers},
            )


def published(records: list[Record]) -> list[Request]:
    found = [read_request(r.value) for r in records]
    assert all(isinstance(r, Request) for r in found), found
    return [r for r in found if isinstance(r, Request)]


def _deep(levels: int) -> bytes:
    return b'{"channel": "web", "subject": ' + b"[" * levels + b"]" * levels + b"}"


HOSTILE: list[tuple[str, dict[str, Any] | bytes, int, str]] = [
    ("deep nesting", _deep(200), 422, "too_deep"),
    ("not JSON", b'{"channel": "web", ', 400, "invalid_json"),
    ("not UTF-8", b'{"channel": "\xff"}', 400, "invalid_encoding"),
    ("not an object", b"[1, 2]", 422, "not_an_object"),
    ("NUL escaped", b'{"channel": "web", "subject": "a\\u0000b"}', 422, "nul_character"),
    ("unknown field", web_request(colour="red"), 422, "unknown_field"),
    ("the channel's own id", web_request(channel_message_id="mine"), 422, "unknown_field"),
    ("email", web_request(channel="email"), 422, "channel_not_served"),
    ("no such channel", web_request(channel="fax"), 422, "unknown_channel"),
    ("no contact", web_request(customer={"name": "Ann"}), 422, "no_contact_method"),
    ("bad e-mail", web_request(customer={"name": "A", "email": "x@"}), 422, "invalid_email"),
    (
        "no subject",
        {k: v for k, v in web_request().items() if k != "subject"},
        422,
        "missing_field",
    ),
    (
        "a receipt time of its own",  # urgent and a week old: breached and escalated at once
        web_request(
            priority="urgent",
            received_at=(datetime.now(UTC) - timedelta(days=6, hours=23)).isoformat(),
        ),
        422,
        "unknown_field",
    ),
    # A web form vouches for no address: a reply names its conversation, never a ticket.
    (
        "a ticket number",
        web_request(reply_to_ticket="REQ-2026-000001"),
        422,
        "reply_by_conversation",
    ),
    ("not a number", web_request(reply_to_ticket="ticket 7"), 422, "reply_by_conversation"),
    *[
        (f"posting as {channel}", web_request(channel=channel), 422, "channel_not_served")
        for channel in ("email", "phone", "chat")
    ],
]


@pytest.mark.asyncio
async def test_hostile_posts_are_refused_with_a_reason_code_and_publish_nothing(
    settings: Settings, kafka: KafkaProbe
) -> None:
    small = settings.replace(console_max_body=4096)
    async with served(build_service("console", small)) as url:
        channel = Channel(small, url)
        answers: dict[str, tuple[int, dict[str, Any]]] = {}

        async def refused(name: str, response: httpx.Response) -> None:
            answers[name] = (response.status_code, response.json())

        await refused("no credential", await channel.post(web_request(), actor=None))
        await refused(
            "not a token",
            await channel.post(web_request(), actor=None, Authorization="Bearer x.y.z"),
        )
        await refused("an agent", await channel.post(web_request(), actor="li.na"))
        await refused("a customer", await channel.post(web_request(), actor="customer"))
        await refused("too large", await channel.post(b'{"subject": "' + b"x" * 5000 + b'"}'))
        await refused(
            "a key too long", await channel.post(web_request(), **{"Idempotency-Key": "k" * 201})
        )
        for name, body, _, _ in HOSTILE:
            await refused(name, await channel.post(body))
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            bearer = {"Authorization": f"Bearer {token(small, WEBFORM)}"}
            await refused("the agents' API", await client.get("/api/tickets", headers=bearer))
        accepted = await channel.post(web_request())
        records = await kafka.all_records(INCOMING, settle=1.5)

    expected = {
        "no credential": (401, "unauthenticated"),
        "not a token": (401, "unauthenticated"),
        "an agent": (403, "forbidden"),
        "a customer": (403, "forbidden"),
        "too large": (413, "body_too_large"),
        "a key too long": (422, "invalid_request"),
        "the agents' API": (403, "forbidden"),
        **{name: (status, code) for name, _, status, code in HOSTILE},
    }
    assert {name: (status, body["code"]) for name, (status, body) in answers.items()} == expected
    assert answers["unknown field"][1]["field"] == "colour"
    assert answers["the channel's own id"][1]["field"] == "channel_message_id"
    assert answers["a receipt time of its own"][1]["field"] == "received_at"
    assert answers["no contact"][1]["field"] == "customer"
    # Only the valid request went out: intake reads it as it reads any adapter's.
    assert accepted.status_code == 202, accepted.text
    [request] = published(records)
    assert request.channel_message_id == accepted.json()["channel_message_id"]
    assert records[0].key == f"web:{request.channel_message_id}".encode()
    assert abs(request.received_at - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.asyncio
async def test_an_idempotency_key_answers_its_first_id_after_a_restart_until_forgotten(
    settings: Settings, kafka: KafkaProbe
) -> None:
    key = {"Idempotency-Key": "form-submission-41"}
    first_body = web_request(subject="Printer jams")
    async with served(build_service("console", settings)) as url:
        channel = Channel(settings, url)
        first = await channel.post(first_body, **key)
        again = await channel.post(first_body, **key)
        changed = await channel.post(web_request(subject="Scanner jams"), **key)
        other_client = await channel.post(first_body, actor=PORTAL, **key)
        # A client retrying at once, many times over, before any answer came back.
        racing = {"Idempotency-Key": "form-submission-42"}
        raced = await asyncio.gather(*(channel.post(first_body, **racing) for _ in range(6)))
    console = build_service("console", settings)
    async with served(console) as url:
        channel = Channel(settings, url)
        after_restart = await channel.post(first_body, **key)
        # The retention has passed (as the purge sees it): the key is a new request's.
        async with console.pool.acquire() as conn:
            later = datetime.now(UTC) + timedelta(seconds=1)
            forgotten = await forget_idempotency_keys(conn, later)
        after_retention = await channel.post(first_body, **key)
        records = await kafka.all_records(INCOMING, settle=1.5)

    assert first.status_code == 202, first.text
    made = first.json()["channel_message_id"]
    assert (again.status_code, again.json()["channel_message_id"]) == (202, made)
    assert again.headers["Idempotency-Replayed"] == "true"
    assert (changed.status_code, changed.json()["code"]) == (422, "idempotency_key_reused")
    assert (after_restart.status_code, after_restart.json()["channel_message_id"]) == (202, made)
    # Keys are each client's own: the portal's same key is its own request.
    assert other_client.status_code == 202
    assert other_client.json()["channel_message_id"] != made
    assert {r.status_code for r in raced} == {202}
    [raced_id] = {r.json()["channel_message_id"] for r in raced}
    assert forgotten == 3
    assert after_retention.status_code == 202
    assert after_retention.json()["channel_message_id"] != made
    ids = [r.channel_message_id for r in published(records)]
    assert sorted(ids) == sorted(
        [
            made,
            other_client.json()["channel_message_id"],
            raced_id,
            after_retention.json()["channel_message_id"],
        ]
    )


@pytest.mark.asyncio
async def test_over_its_rate_a_client_is_answered_429_with_retry_after_and_others_go_on(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(console_requests_limit=3, console_requests_window="1m")
    probe = KafkaProbe(settings)
    async with served(build_service("console", settings)) as url:
        channel = Channel(settings, url)
        # What the body says about who is asking changes nothing: the token is the client.
        answers = [
            await channel.post(
                web_request(customer={"name": f"C{n}", "email": f"c{n}@example.com"})
            )
            for n in range(4)
        ]
        other = await channel.post(web_request(), actor=PORTAL)
        records = await probe.all_records(INCOMING, settle=1.5)
    await probe.close()

    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert answers[3].json()["code"] == "too_many_requests"
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 20  # one request per 20 s comes back
    assert other.status_code == 202
    assert len(published(records)) == 4

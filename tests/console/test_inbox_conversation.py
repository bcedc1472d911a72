"""A whole conversation by the HTTP channel: the customer posts to ``POST /requests`` and hears
back on ``customer.messages``; intake, dispatch and notify run on the real broker and PostgreSQL
and the console is served over HTTP — the email conversation's twin
(``tests/intake/mail/test_adapter.py``)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from services import build_service
from shared.deadletter import Record
from shared.local.sinks import http_receiver, smtp_server
from shared.settings import Settings
from tests.console.support import served
from tests.notify.support import agent_notices, notify_policy
from tests.support.credentials import token
from tests.support.kafka import KafkaProbe
from tests.support.personal import opened
from tests.support.services import running
from tests.support.waiting import eventually

INTAKE, DISPATCH, MESSAGES = "intake.events", "dispatch.events", "customer.messages"
CUSTOMER = {"name": "Ann Lee", "email": "ann.lee@example.com", "language": "en"}


def data(record: Record) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(record.value)["data"]
    return value


def of_type(name: str) -> Any:
    return lambda r: r.header("ce_type") == f"servicedesk.ticket.{name}.v1"


class WebForm:
    """The customer's side: a web form posting to the console, reading ``customer.messages``."""

    def __init__(self, settings: Settings, url: str, kafka: KafkaProbe) -> None:
        self.settings, self.url, self.kafka = settings, url, kafka
        self.token = token(settings, "channel:webform")
        self.conversation = ""

    async def post(self, subject: str, text: str, **fields: Any) -> str:
        body = {
            "channel": "web",
            "customer": CUSTOMER,
            "subject": subject,
            "description": text,
            **fields,
        }
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(
                f"{self.url}/requests",
                json=body,
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "Idempotency-Key": str(uuid.uuid4()),
                },
            )
        assert answer.status_code == 202, answer.text
        made: str = answer.json()["channel_message_id"]
        self.conversation = self.conversation or made
        return made

    async def heard(self, count: int) -> list[dict[str, Any]]:
        """The first ``count`` messages to this conversation, once that many arrived, read back
        from the console as the form's own server does (``GET /requests/{id}/messages``)."""
        items = await eventually(
            self.messages,
            lambda found: len(found) >= count,
            timeout=60,
            what=f"{count} messages for the web form",
        )
        return items[:count]

    async def messages(
        self, actor: str = "channel:webform", after: int = 0
    ) -> list[dict[str, Any]]:
        credential = self.token if actor == "channel:webform" else token(self.settings, actor)
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(
                f"{self.url}/requests/{self.conversation}/messages",
                params={"after": after},
                headers={"Authorization": f"Bearer {credential}"},
            )
        if answer.status_code == 404:
            return [{"status": 404}]
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items


@pytest.mark.asyncio
async def test_a_whole_conversation_by_the_http_channel_each_reply_published_once(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    with smtp_server() as smtp, http_receiver() as http:
        desk = settings.replace(
            policy_file=notify_policy(tmp_path / "policy.yaml", http),
            smtp_port=smtp.port,
            notify_signing_secret="test-secret",
        )
        async with (
            running(build_service("intake", desk)),
            running(build_service("dispatch", desk)),
            running(build_service("notify", desk)),
            served(build_service("console", desk)) as url,
        ):
            form = WebForm(desk, url, kafka)
            # The request, and its acknowledgement.
            await form.post("Printer jams", "The printer on floor 3 jams on every page.")
            [ack] = await form.heard(1)
            number = ack["number"]
            [assigned] = await kafka.await_records(DISPATCH, of_type("assigned"))
            owner = data(assigned)["agent_id"]
            await kafka.ticket_command(owner, number, "accept")

            # The agent's question, and the customer's answer through the form.
            await kafka.ticket_command(owner, number, "respond", message="Which tray do you use?")
            question = (await form.heard(2))[1]
            await form.post("Re: Printer jams", "Tray 2.", in_reply_to=[form.conversation])
            told = await eventually(
                lambda: _async(agent_notices(http, owner, "customer_reply")),
                lambda found: len(found) >= 1,
                what="the assignee told of the answer",
            )
            assert "Tray 2." in told[0]["text"]

            # The resolution; "still broken"; reopened; resolved again, with the survey.
            await kafka.ticket_command(
                owner, number, "resolve", resolution="Replaced the pickup roller."
            )
            resolution = (await form.heard(3))[2]
            await form.post(
                "Re: Printer jams", "Still broken: it jams again.", in_reply_to=[form.conversation]
            )
            [reopened] = await kafka.await_records(DISPATCH, of_type("reopened"))
            await kafka.ticket_command(
                owner, number, "resolve", resolution="Replaced the whole tray."
            )
            survey = (await form.heard(4))[3]
            later = await form.messages(after=ack["position"])
            another_client = await form.messages("channel:portal")
            heard = await kafka.all_records(MESSAGES, settle=2.0)
            received = await kafka.await_records(INTAKE, of_type("received"))
            replies = await kafka.await_records(INTAKE, of_type("customer_replied"), count=2)

    assert ack["template"] == "acknowledgement" and number in ack["subject"]
    assert [m["position"] for m in later] == [m["position"] for m in (question, resolution, survey)]
    assert another_client == [{"status": 404}], "only the client that posted it reads it"
    assert not any(b"Which tray" in r.value for r in heard), "the agent's words are sealed"
    assert (question["template"], question["text"]) == ("agent_reply", "Which tray do you use?")
    assert resolution["template"] == "resolution"
    assert "Replaced the pickup roller." in resolution["text"]
    assert data(reopened)["actor"] == "customer"
    reason = (await opened(desk, data(reopened)))["reason"]
    assert reason == "customer replied: Still broken: it jams again."
    assert survey["template"] == "resolution"
    assert "Replaced the whole tray." in survey["text"]
    assert f"/survey/{number}" in survey["text"]
    # One ticket, two replies on it; each message to the customer published once, in order,
    # and nothing by mail: a web customer hears through the web channel's adapter.
    assert [data(r)["number"] for r in received] == [number]
    assert {data(r)["number"] for r in replies} == {number}
    published = [data(r) for r in heard]
    assert [m["template"] for m in published] == [
        "acknowledgement",
        "agent_reply",
        "resolution",
        "resolution",
    ]
    assert all(Counter(m["notice_key"] for m in published)[m["notice_key"]] == 1 for m in published)
    assert {m["conversation"] for m in published} == {form.conversation}
    assert smtp.to(CUSTOMER["email"]) == []
    assert len(agent_notices(http, owner, "customer_reply")) == 2


async def _async(value: Any) -> Any:
    return value

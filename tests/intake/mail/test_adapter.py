"""The email channel end to end: a real SMTP client sends to ``desk adapter email``, intake,
dispatch and notify run on the real broker and PostgreSQL, and the customer's mail arrives at a
real SMTP server (the local sink)."""

from __future__ import annotations

import json
import smtplib
from collections import Counter
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.dispatch.app import build as dispatch
from services.intake.app import build as intake
from services.intake.mail.reading import MAX_PARTS
from services.notify.app import build as notify
from services.notify.events import ticket_of_mail
from shared.deadletter import Record
from shared.local.sinks import HttpReceiver, SmtpServer, http_receiver, smtp_server
from shared.settings import Settings
from tests.intake.mail.support import CUSTOMER, customer_mail, email_adapter, send
from tests.notify.support import agent_notices, notify_policy
from tests.support.kafka import KafkaProbe
from tests.support.personal import opened
from tests.support.services import running
from tests.support.waiting import eventually

INTAKE, DISPATCH = "intake.events", "dispatch.events"


def data(record: Record) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(record.value)["data"]
    return value


def of_type(name: str) -> Any:
    return lambda r: r.header("ce_type") == f"servicedesk.ticket.{name}.v1"


def desk_settings(
    settings: Settings, tmp_path: Path, smtp: SmtpServer, http: HttpReceiver
) -> Settings:
    """Agents are told by webhook (the receiver); customers by mail (the sink)."""
    return settings.replace(
        policy_file=notify_policy(tmp_path / "policy.yaml", http),
        smtp_port=smtp.port,
        notify_signing_secret="test-secret",
    )


async def mails(smtp: SmtpServer, count: int) -> list[EmailMessage]:
    """The first ``count`` mails to the customer, once that many arrived."""
    await eventually(
        lambda: _count(smtp),
        lambda n: n >= count,
        timeout=60,
        what=f"{count} mails to the customer",
    )
    return smtp.to(CUSTOMER)[:count]


async def _count(smtp: SmtpServer) -> int:
    return len(smtp.to(CUSTOMER))


def ids(message: EmailMessage, header: str) -> list[str]:
    return str(message.get(header, "")).split()


def ignored(reason: str) -> float:
    labels = {"outcome": "ignored", "reason": reason}
    return REGISTRY.get_sample_value("desk_adapter_email_mail_total", labels) or 0.0


@pytest.mark.asyncio
async def test_a_whole_conversation_by_email_threaded_and_each_mail_sent_once(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    with smtp_server() as smtp, http_receiver() as http:
        desk = desk_settings(settings, tmp_path, smtp, http)
        async with (
            running(intake(desk)),
            running(dispatch(desk)),
            running(notify(desk)),
            email_adapter(desk) as port,
        ):
            # The request, and its acknowledgement.
            first = customer_mail(
                "The printer on floor 3 jams on every page.", subject="Printer jams"
            )
            await send(port, first)
            [ack] = await mails(smtp, 1)
            number = ticket_of_mail(str(ack["Message-ID"]))
            assert number is not None
            [assigned] = await kafka.await_records(DISPATCH, of_type("assigned"))
            owner = data(assigned)["agent_id"]
            await kafka.ticket_command(owner, number, "accept")

            # The agent's question, and the customer's answer by replying to that email.
            await kafka.ticket_command(owner, number, "respond", message="Which tray do you use?")
            question = (await mails(smtp, 2))[1]
            answer = customer_mail(
                "Tray 2.\n\nOn Friday the desk wrote:\n> Which tray do you use?",
                subject=f"Re: {question['Subject']}",
                replying_to=question,
            )
            await send(port, answer)
            told = await eventually(
                lambda: _agent_notices(http, owner, "customer_reply"),
                lambda found: len(found) >= 1,
                what="the assignee told of the answer",
            )
            assert "Tray 2." in told[0]["text"] and "Which tray" not in told[0]["text"]

            # The resolution; the customer replies "still broken"; reopened; resolved again.
            await kafka.ticket_command(
                owner, number, "resolve", resolution="Replaced the pickup roller."
            )
            resolution = (await mails(smtp, 3))[2]
            await send(
                port,
                customer_mail(
                    "Still broken: it jams again.",
                    subject=f"Re: {resolution['Subject']}",
                    replying_to=resolution,
                ),
            )
            [reopened] = await kafka.await_records(DISPATCH, of_type("reopened"))
            assert data(reopened)["actor"] == "customer"
            reason = (await opened(settings, data(reopened)))["reason"]
            assert reason == "customer replied: Still broken: it jams again."
            await kafka.ticket_command(
                owner, number, "resolve", resolution="Replaced the whole tray."
            )
            survey = (await mails(smtp, 4))[3]
            await kafka.all_records(INTAKE, settle=2.0)  # let anything extra arrive
            received = await kafka.await_records(INTAKE, of_type("received"))
            replies = await kafka.await_records(INTAKE, of_type("customer_replied"), count=2)

    # One ticket, two replies on it, and the customer got four mails, each once.
    assert [data(r)["number"] for r in received] == [number]
    assert {data(r)["number"] for r in replies} == {number}
    sent = smtp.to(CUSTOMER)
    assert [m["Message-ID"] for m in sent] == [
        m["Message-ID"] for m in (ack, question, resolution, survey)
    ]
    assert len(set(Counter(str(m["Message-ID"]) for m in sent))) == 4
    assert "Which tray do you use?" in question.get_content()
    assert "Replaced the whole tray." in survey.get_content()
    assert f"/survey/{number}" in survey.get_content()
    # Every mail is in the thread: the number in its subject, In-Reply-To the message before
    # it (the customer's own, or servicedesk's), References the whole conversation so far.
    assert all(f"[{number}]" in str(m["Subject"]) for m in sent)
    assert ids(ack, "In-Reply-To") == [first["Message-ID"]]
    assert ids(question, "In-Reply-To") == [ack["Message-ID"]]
    assert ids(question, "References") == [first["Message-ID"], ack["Message-ID"]]
    assert ids(resolution, "In-Reply-To") == [answer["Message-ID"]]
    assert ids(resolution, "References") == [
        first["Message-ID"],
        ack["Message-ID"],
        question["Message-ID"],
        answer["Message-ID"],
    ]
    assert ids(survey, "References")[:5] == [
        *ids(resolution, "References"),
        resolution["Message-ID"],
    ]
    # The assignee heard of both replies (with the text), once each.
    assert len(agent_notices(http, owner, "customer_reply")) == 2


async def _agent_notices(http: HttpReceiver, agent_id: str, template: str) -> list[dict[str, Any]]:
    return agent_notices(http, agent_id, template)


@pytest.mark.asyncio
async def test_an_auto_reply_to_the_acknowledgement_opens_nothing_and_sends_nothing(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    with smtp_server() as smtp, http_receiver() as http:
        desk = desk_settings(settings, tmp_path, smtp, http)
        async with (
            running(intake(desk)),
            running(dispatch(desk)),
            running(notify(desk)),
            email_adapter(desk) as port,
        ):
            await send(port, customer_mail("My laptop does not start.", subject="Laptop"))
            [ack] = await mails(smtp, 1)
            await kafka.await_records(DISPATCH, of_type("assigned"))
            before = {
                reason: ignored(reason)
                for reason in ("auto_submitted", "bulk_precedence", "auto_reply", "bounce")
            }
            away = "I am out of the office until Monday."
            loops = [
                (
                    customer_mail(
                        away,
                        subject=f"Auto: {ack['Subject']}",
                        replying_to=ack,
                        Auto_Submitted="auto-replied",
                    ),
                    CUSTOMER,
                ),
                (
                    customer_mail(
                        away, subject=f"Re: {ack['Subject']}", replying_to=ack, Precedence="bulk"
                    ),
                    CUSTOMER,
                ),
                (
                    customer_mail(
                        away, subject=f"Re: {ack['Subject']}", replying_to=ack, X_Autoreply="yes"
                    ),
                    CUSTOMER,
                ),
                (
                    customer_mail(
                        "Delivery failed",
                        subject="Undeliverable",
                        replying_to=ack,
                        sender="Mail Delivery System <MAILER-DAEMON@mx.example.com>",
                    ),
                    "",
                ),
            ]
            for message, envelope_sender in loops:
                await send(port, message, envelope_sender=envelope_sender)
            incoming = await kafka.all_records("requests.incoming", settle=2.0)
            events = await kafka.all_records(INTAKE, settle=1.0)
            lifecycle = await kafka.all_records(DISPATCH, settle=1.0)
    assert len(incoming) == 1, "only the request itself was published"
    assert Counter(r.header("ce_type") for r in events) == {
        "servicedesk.ticket.received.v1": 1,
        "servicedesk.ticket.triaged.v1": 1,
    }
    kinds = [str(r.header("ce_type")) for r in lifecycle]
    assert not [k for k in kinds if "reopened" in k or "reassigned" in k or "resumed" in k], kinds
    assert smtp.to(CUSTOMER) == [ack], "nothing answered the auto-reply"
    assert [p["template"] for p in (r.json() for r in http.all())] == ["assignment"]
    assert ignored("auto_submitted") - before["auto_submitted"] == 1
    assert ignored("bulk_precedence") - before["bulk_precedence"] == 1
    assert ignored("auto_reply") - before["auto_reply"] == 1
    assert ignored("bounce") - before["bounce"] == 1


@pytest.mark.asyncio
async def test_replies_to_the_first_mail_or_the_acknowledgement_before_any_agent_acted(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """GLPI #16903, osTicket #902: both used to open a second ticket."""
    with smtp_server() as smtp, http_receiver() as http:
        desk = desk_settings(settings, tmp_path, smtp, http)
        async with running(intake(desk)), running(notify(desk)), email_adapter(desk) as port:
            first = customer_mail("The VPN drops every hour.", subject="VPN")
            await send(port, first)
            # At once, before anything answered: the customer adds to their own mail.
            await send(
                port, customer_mail("It started Monday.", subject="Re: VPN", replying_to=first)
            )
            [ack] = await mails(smtp, 1)
            await send(port, customer_mail("Also on Wi-Fi.", subject="Re: x", replying_to=ack))
            replies = await kafka.await_records(INTAKE, of_type("customer_replied"), count=2)
            received = await kafka.all_records(INTAKE, settle=1.5)
    [ticket] = [data(r) for r in received if of_type("received")(r)]
    assert [data(r)["number"] for r in replies] == [ticket["number"]] * 2
    bodies = [(await opened(settings, data(r)))["body"] for r in replies]
    assert bodies == ["It started Monday.", "Also on Wi-Fi."]


@pytest.mark.asyncio
async def test_an_oversized_mail_or_one_of_too_many_parts_is_refused_at_smtp_and_publishes_nothing(
    settings: Settings, kafka: KafkaProbe
) -> None:
    desk = settings.replace(email_adapter_max_bytes=4096)
    async with email_adapter(desk) as port:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            await send(port, customer_mail("x" * 10_000, subject="big"))
        assert refused.value.smtp_code == 552
        await send(port, customer_mail("small enough", subject="small"))
    async with email_adapter(settings) as port:
        parted = customer_mail("see the files", subject="parted")
        for n in range(MAX_PARTS):
            parted.add_attachment(b"x", maintype="application", subtype="octet-stream",
                                  filename=f"f{n}.bin")  # fmt: skip
        with pytest.raises(smtplib.SMTPDataError) as too_many:
            await send(port, parted)
        assert too_many.value.smtp_code == 550
        assert b"too_many_parts" in too_many.value.smtp_error
        incoming = await kafka.all_records("requests.incoming", settle=1.0)
    assert [json.loads(r.value)["subject"] for r in incoming] == ["small"]

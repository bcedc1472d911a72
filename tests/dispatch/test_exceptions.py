"""The exceptions path of sop.md, end to end (issue 16 item 5): intake, dispatch, sla and notify
running on a real broker and PostgreSQL with the shipped policy, time driven by the test, every
notice caught by a real SMTP server.

One row per path: what the desk does, then what must be observable — events, rejections with
their reason codes, the mails people get.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import Message
from typing import Any

import pytest

from services.cli.tickets import timeline
from services.dispatch.app import build as dispatch
from services.intake.app import build as intake
from services.notify.app import build as notify
from services.sla.app import build as sla
from shared.database import connect
from shared.keystore import KeyStore, MasterKey
from shared.local.sinks import SmtpServer, smtp_server
from shared.settings import Settings
from tests.intake.requests import RECEIVED_AT, encode, valid
from tests.support.credentials import token
from tests.support.kafka import KafkaProbe
from tests.support.personal import opened
from tests.support.records import data
from tests.support.records import event as of
from tests.support.services import running
from tests.support.time import DrivenTime
from tests.support.waiting import eventually

START = datetime.fromisoformat(RECEIVED_AT) + timedelta(minutes=1)
"""Friday 09:31 in Shanghai: the shipped office calendar's day has begun."""
DISPATCH, SLA, REJECTED = "dispatch.events", "sla.events", "tickets.commands.rejected"
CUSTOMER = "wang.fang@example.com"
ENGLISH = {"name": "Ann Lee", "email": "ann@example.com", "language": "en"}
INQUIRY = {"subject": "How do I reset my password?", "description": "I forgot it",
           "product_line": None, "customer": ENGLISH}  # fmt: skip
COMPLAINT = {"subject": "投诉：客服态度很差", "description": "电话客服态度很差，我要投诉。",
             "product_line": None}  # fmt: skip


@dataclass
class Scene:
    """The running desk, and what a test does to it and sees of it."""

    settings: Settings
    kafka: KafkaProbe
    smtp: SmtpServer
    time: DrivenTime
    now: datetime = START

    async def at(self, minutes: float) -> None:
        """Move every service's clock to ``minutes`` after :data:`START`."""
        self.now = START + timedelta(minutes=minutes)
        await self.time.set(self.now)

    async def request(self, message_id: str, **changes: Any) -> tuple[str, str]:
        """A customer's request, dispatched: its number and the agent it went to."""
        await self.kafka.publish("requests.incoming", encode(valid(message_id, **changes)))
        [received] = await self.kafka.await_records(
            "intake.events", of("ticket.received", channel_message_id=message_id)
        )
        number = data(received)["number"]
        [assigned] = await self.events("ticket.assigned", number=number)
        return number, assigned["agent_id"]

    async def command(
        self, number: str, kind: str, actor: str, *, signer: str | None = None, **fields: Any
    ) -> str:
        """A command signed by ``signer`` (default: the actor), issued now; its id."""
        command_id = str(uuid.uuid4())
        body = {"command_id": command_id, "type": kind, "ticket_number": number,
                "actor": actor, **fields}  # fmt: skip
        signed = token(self.kafka.settings, signer or actor, now=self.now)
        await self.kafka.command("tickets.commands", body, key=number, token=signed)
        return command_id

    async def working(self, number: str, agent: str) -> None:
        """The agent takes the ticket up: accepts, answers, starts work."""
        await self.command(number, "accept", agent)
        await self.command(number, "respond", agent, message="We are on it.")
        await self.command(number, "start_work", agent)
        await self.events("ticket.work_started", number=number)

    async def events(self, kind: str, count: int = 1, **fields: Any) -> list[dict[str, Any]]:
        topic = SLA if kind.startswith("sla.") else DISPATCH
        found = await self.kafka.await_records(topic, of(kind, **fields), count=count)
        return [await opened(self.settings, data(r)) for r in found]

    async def rejection(self, command_id: str) -> dict[str, Any]:
        [refused] = await self.kafka.await_records(
            REJECTED, of("ticket_command.rejected", command_id=command_id)
        )
        return data(refused)

    async def mail(self, address: str, number: str, *words: str) -> Message:
        """The one mail to ``address`` about the ticket whose body says all of ``words``."""

        def matching() -> list[Message]:
            return [
                m
                for m in self.smtp.to(address)
                if number in str(m["Subject"]) and all(w in _body(m) for w in words)
            ]

        async def probe() -> list[Message]:
            return matching()

        found = await eventually(probe, what=f"a mail to {address} on {number} saying {words}")
        assert len(found) == 1, [str(m["Subject"]) for m in found]
        return found[0]

    async def story(self, ticket_id: str) -> list[str]:
        conn = await connect(self.settings.require_database_url())
        keys = KeyStore(MasterKey.from_settings(self.settings))
        try:
            return [f"{e.what}: {e.summary()}" for e in await timeline(conn, ticket_id, keys)]
        finally:
            await conn.close()


def _body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    return payload.decode() if isinstance(payload, bytes) else str(message.get_payload())


@asynccontextmanager
async def desk(settings: Settings, kafka: KafkaProbe) -> AsyncIterator[Scene]:
    with smtp_server() as smtp:
        driven = settings.replace(clock="driven", smtp_port=smtp.port,
                                  notify_signing_secret="test-secret")  # fmt: skip
        time = DrivenTime(driven, "intake", "dispatch", "sla", "notify")
        await time.set(START)
        async with (
            running(intake(driven)),
            running(dispatch(driven)),
            running(sla(driven)),
            running(notify(driven)),
        ):
            yield Scene(driven, kafka, smtp, time)


# --- the rows -----------------------------------------------------------------------------------


async def escalated_to_supervisors(scene: Scene) -> None:
    """escalate, at any level, hands the ticket to the group's supervisor; they and the customer
    hear of it."""
    number, agent = await scene.request("esc-1")  # a printer fault: the printing group
    await scene.working(number, agent)
    await scene.command(number, "escalate", agent, reason="needs a replacement part")
    [first] = await scene.events("ticket.escalated", number=number)
    assert (first["level"], first["to_agent"], first["actor"]) == (1, "qian.hui", agent)
    await scene.events("ticket.assigned", number=number, agent_id="qian.hui", cause="escalated")
    await scene.mail("qian.hui@desk.example.com", number, "needs a replacement part")
    await scene.mail(CUSTOMER, number, "已升级")
    # qian.hui cannot grant it either: the level above is the supervisors group's supervisor.
    await scene.command(number, "escalate", "qian.hui", reason="over my budget")
    [second] = await scene.events("ticket.escalated", number=number, level=2)
    assert (second["to_agent"], second["to_group"]) == ("sun.yu", "directors")
    await scene.events("ticket.assigned", number=number, agent_id="sun.yu")
    await scene.mail("sun.yu@desk.example.com", number, "over my budget")


async def reassigned(scene: Scene) -> None:
    """A reassignment tells the customer their request is with someone else."""
    number, agent = await scene.request("re-1")
    await scene.working(number, agent)
    other = "mark.chen" if agent != "mark.chen" else "zhou.min"
    await scene.command(number, "reassign", "qian.hui", to_agent=other, reason="holiday")
    await scene.events("ticket.assigned", number=number, agent_id=other, cause="reassigned")
    await scene.mail(CUSTOMER, number, "已转交")


async def quiet_too_long(scene: Scene) -> None:
    """Four office hours without a word to the customer: sla's customer_update clock (driven
    time) breaches and the customer gets a progress notice; each update started it again."""
    number, agent = await scene.request("quiet-1")
    await scene.at(4)
    await scene.working(number, agent)  # the response at 09:35 starts the quiet over
    [breach] = await asyncio_later(scene, 4 * 60 + 5, "sla.clock_breached", number=number,
                                   metric="customer_update")  # fmt: skip
    assert breach["due_at"] == "2026-11-20T05:35:00Z", breach  # 13:35 in Shanghai
    await scene.mail(CUSTOMER, number, "仍在处理中")


async def asyncio_later(
    scene: Scene, minutes: float, kind: str, **fields: Any
) -> list[dict[str, Any]]:
    await scene.at(minutes)
    return await scene.events(kind, **fields)


async def flagged_customer(scene: Scene) -> None:
    """flag_customer records the reason, hands the ticket to the supervisor, and marks the
    customer's next ticket."""
    number, agent = await scene.request("flag-1")
    await scene.working(number, agent)
    await scene.command(number, "flag_customer", agent, reason="threatens the agent")
    [flag] = await scene.events("ticket.customer_flagged", number=number)
    assert (flag["actor"], flag["reason"]) == (agent, "threatens the agent")
    assert flag["customer_key"].startswith("cust-"), "the customer's pseudonym"
    assert CUSTOMER not in flag["customer_key"]
    await scene.events("ticket.assigned", number=number, agent_id="qian.hui", cause="reassigned")
    await scene.mail("qian.hui@desk.example.com", number, "threatens the agent")
    later, _ = await scene.request("flag-2", subject="又卡纸了")
    [classified] = await scene.events("ticket.classified", number=later)
    assert classified["customer_flag"] == "threatens the agent"
    story = await scene.story(classified["ticket_id"])
    assert any("CUSTOMER FLAGGED before: 'threatens the agent'" in line for line in story)


async def specialist_answers(scene: Scene) -> None:
    """request_specialist: the group asked hears (copying the customer-service supervisor), the
    ticket stays with its owner, the findings stop the clock and reach both."""
    number, agent = await scene.request("spec-1", **INQUIRY)  # the front line
    await scene.working(number, agent)
    await scene.command(number, "request_specialist", agent, to_group="network",
                        question="Is the VPN down for her?")  # fmt: skip
    [started] = await scene.events("sla.clock_started", number=number,
                                   metric="specialist_findings")  # fmt: skip
    assert started["group_id"] == "network"
    assert started["deadline"] == "2026-11-20T03:31:00Z"  # two office hours
    await scene.mail("wu.hao@desk.example.com", number, "Is the VPN down for her?")
    await scene.mail("zhao.lei@desk.example.com", number, "Is the VPN down for her?")
    await scene.at(30)
    await scene.command(number, "provide_findings", "wu.hao", findings="No: her account is locked")
    [met] = await scene.events("sla.clock_met", number=number, metric="specialist_findings")
    assert (met["late"], met["fulfilled_by"]) == (False, "findings_provided")
    await scene.mail(f"{agent}@desk.example.com", number, "her account is locked")
    await scene.mail("zhao.lei@desk.example.com", number, "her account is locked")
    moves = await scene.kafka.all_records(DISPATCH, settle=0.5)
    owners = [data(r)["agent_id"] for r in moves if of("ticket.assigned", number=number)(r)]
    assert owners == [agent], "the ticket stayed with its owner"


async def specialist_late(scene: Scene) -> None:
    """No findings within two office hours: the clock breaches and escalates, and the group
    asked is told (its supervisor) like for every other metric."""
    number, agent = await scene.request("spec-2", **INQUIRY)
    await scene.working(number, agent)
    await scene.command(number, "request_specialist", agent, to_group="network",
                        question="Is the VPN down?")  # fmt: skip
    await scene.events("sla.clock_started", number=number, metric="specialist_findings")
    await scene.at(2 * 60 + 5)
    [breach] = await scene.events("sla.clock_breached", number=number,
                                  metric="specialist_findings")  # fmt: skip
    assert breach["group_id"] == "network"
    await scene.events("sla.escalated", number=number, metric="specialist_findings", level=1)
    await scene.mail("qian.hui@desk.example.com", number, "专业组答复", "第 1 级")


async def complaint_resolution(scene: Scene) -> None:
    """A complaint is resolved with cause, actions and compensation, or not at all."""
    number, agent = await scene.request("complaint-1", **COMPLAINT)
    await scene.working(number, agent)
    refused = await scene.command(number, "resolve", agent, resolution="已道歉",
                                  cause="新员工培训不足", actions="已约谈并培训")  # fmt: skip
    rejection = await scene.rejection(refused)
    assert (rejection["reason"], rejection["status"]) == ("resolution_incomplete", "in_progress")
    assert "compensation missing" in rejection["detail"]
    await scene.command(number, "resolve", agent, resolution="已道歉", cause="新员工培训不足",
                        actions="已约谈并培训", compensation="赠送一个月服务")  # fmt: skip
    [resolved] = await scene.events("ticket.resolved", number=number)
    assert (resolved["cause"], resolved["actions"], resolved["compensation"]) == (
        "新员工培训不足", "已约谈并培训", "赠送一个月服务"
    )  # fmt: skip


async def standard_replies(scene: Scene) -> None:
    """respond names a standard reply: rendered in the customer's language; an unknown one is
    refused."""
    chinese, agent = await scene.request("reply-zh")
    english, other = await scene.request("reply-en", **INQUIRY)
    for number, who in ((chinese, agent), (english, other)):
        await scene.command(number, "accept", who)
        await scene.command(number, "respond", who, template="standard_inquiry")
    [zh] = await scene.events("ticket.responded", number=chinese)
    [en] = await scene.events("ticket.responded", number=english)
    assert (zh["template"], zh["language"]) == ("standard_inquiry", "zh")
    assert (
        zh["message"]
        == f"您好！关于 {chinese}，请描述问题的类型以及发生的时间，以便我们尽快为您处理。"
    )
    assert (en["language"], en["first_response"]) == ("en", True)
    assert en["message"].startswith(f"Hello, about {english}: please describe the type of problem")
    await scene.mail(CUSTOMER, chinese, "请描述问题的类型")
    await scene.mail(ENGLISH["email"], english, "please describe the type of problem")
    unknown = await scene.command(chinese, "respond", agent, template="kb_no_such_article")
    assert (await scene.rejection(unknown))["reason"] == "unknown_template"


ROWS: list[tuple[str, Callable[[Scene], Awaitable[None]]]] = [
    ("escalate goes to the supervisor", escalated_to_supervisors),
    ("a reassignment tells the customer", reassigned),
    ("quiet too long sends a progress notice", quiet_too_long),
    ("flag_customer", flagged_customer),
    ("the specialist answers in time", specialist_answers),
    ("the specialist is late", specialist_late),
    ("a complaint's resolution", complaint_resolution),
    ("standard replies", standard_replies),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "row"), ROWS, ids=[r[0] for r in ROWS])
async def test_each_exception_path_is_observable(
    settings: Settings, kafka: KafkaProbe, path: str, row: Callable[[Scene], Awaitable[None]]
) -> None:
    async with desk(settings, kafka) as scene:
        await row(scene)


ASSIGNEE = "<assignee>"
HOSTILE: list[tuple[str, str, str, str | None, dict[str, Any], str]] = [
    # (case, command, actor in the payload, signer when not the actor, fields, reason)
    ("a forged actor", "flag_customer", "zhao.lei", ASSIGNEE, {"reason": "x"}, "unauthenticated"),
    ("findings from outside the group asked", "provide_findings", "mark.chen", None,
     {"findings": "guess"}, "not_permitted"),
    ("an unknown template", "respond", ASSIGNEE, None, {"template": "kb_nothing"},
     "unknown_template"),
    ("a template name of 10,000 characters", "respond", ASSIGNEE, None,
     {"template": "k" * 10_000}, "invalid_command"),
    ("a reason of 40,000 characters", "flag_customer", ASSIGNEE, None,
     {"reason": "滚" * 40_000}, "invalid_command"),
    ("a flag without a reason", "flag_customer", ASSIGNEE, None, {}, "invalid_command"),
    ("a specialist request to no group", "request_specialist", ASSIGNEE, None,
     {"question": "?"}, "invalid_command"),
    ("a reply with a message and a template", "respond", ASSIGNEE, None,
     {"message": "hi", "template": "standard_inquiry"}, "invalid_command"),
    ("findings with a NUL", "provide_findings", "wu.hao", None, {"findings": "a\x00b"},
     "invalid_command"),
]  # fmt: skip


@pytest.mark.asyncio
async def test_hostile_commands_of_the_exceptions_path_are_refused_and_change_nothing(
    settings: Settings, kafka: KafkaProbe
) -> None:
    async with desk(settings, kafka) as scene:
        number, agent = await scene.request("hostile-1", **INQUIRY)
        await scene.working(number, agent)
        await scene.command(number, "request_specialist", agent, to_group="network",
                            question="Is the VPN down?")  # fmt: skip
        await scene.events("ticket.specialist_requested", number=number)

        def who(name: str | None) -> str | None:
            return agent if name == ASSIGNEE else name

        sent = {
            case: await scene.command(number, kind, who(actor) or "", signer=who(signer), **fields)
            for case, kind, actor, signer, fields, _ in HOSTILE
        }
        for case, *_, reason in HOSTILE:
            refused = await scene.rejection(sent[case])
            assert refused["reason"] == reason, (case, refused)
            if reason == "unauthenticated":
                assert refused["actor"] is None, "a forged actor is not named as the actor"
        # The desk still works, and none of it changed the ticket.
        await scene.command(number, "provide_findings", "wu.hao", findings="It is up.")
        await scene.events("ticket.findings_provided", number=number, actor="wu.hao")
        everything = await scene.kafka.all_records(DISPATCH, settle=0.5)
        kinds = [r.header("ce_type") for r in everything if data(r).get("number") == number]
        assert "servicedesk.ticket.customer_flagged.v1" not in kinds
        assert kinds.count("servicedesk.ticket.responded.v1") == 1
        assert kinds.count("servicedesk.ticket.assigned.v1") == 1

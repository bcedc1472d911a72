"""notify end to end: real broker and PostgreSQL, a real SMTP server and a real HTTP receiver."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.cli.tickets import timeline
from services.dispatch.app import build as dispatch
from services.dispatch.events import SatisfactionRecorded, TicketReopened, TicketResolved
from services.intake.app import build as intake
from services.intake.events import CustomerReplied
from services.intake.queries import ticket_id as find_ticket
from services.notify.app import build as notify
from services.notify.channels import sign
from services.notify.rules import Notice
from services.notify.storage import enqueue
from shared.database import connect
from shared.deadletter import Record, list_dead_letters, replay_dead_letter
from shared.kafka import make_producer
from shared.keystore import KeyStore, MasterKey
from shared.local.ports import free_port
from shared.local.sinks import HttpReceiver, SmtpServer, http_receiver, smtp_server
from shared.personal import from_column, ref_in
from shared.settings import Settings
from tests.intake.requests import encode, intake_clock, valid
from tests.notify.support import agent_notices, notify_policy, received, ticket_id, triaged
from tests.sla.support import T0
from tests.support.events import assignment, earlier_event_id, publish_event
from tests.support.kafka import KafkaProbe
from tests.support.processes import ServiceProcess
from tests.support.services import running
from tests.support.time import DrivenTime
from tests.support.waiting import eventually

EVENTS = "notify.events"


def data(record: Record) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(record.value)["data"]
    return value


def gauge(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


def kind(name: str) -> Any:
    return lambda r: r.header("ce_type") == f"servicedesk.notification.{name}.v1"


def notify_settings(
    settings: Settings, tmp_path: Path, smtp: SmtpServer, http: HttpReceiver, **extra: Any
) -> Settings:
    return settings.replace(
        policy_file=notify_policy(tmp_path / "policy.yaml", http),
        smtp_port=smtp.port,
        notify_signing_secret="test-secret",
        notify_retry_backoff="100ms",
        notify_retry_backoff_max="500ms",
        **{"notify_lease": "2s", "notify_send_timeout": "1500ms", **extra},
    )


async def reporting_at_t0(
    settings: Settings, tmp_path: Path, smtp: SmtpServer, http: HttpReceiver
) -> tuple[Settings, DrivenTime]:
    """notify's settings on a driven clock set to T0, its gauges read every 100 ms."""
    desk = notify_settings(
        settings, tmp_path, smtp, http, clock="driven", notify_report_interval="100ms"
    )
    time = DrivenTime(desk, "notify")
    await time.set(T0)
    return desk, time


async def notify_killed_at(
    desk: Settings, kafka: KafkaProbe, tmp_path: Path, crash_at: str, tickets: int
) -> ServiceProcess:
    """notify as a real process with a crash point armed, fed ``tickets`` tickets (each an
    acknowledgement and an assignment webhook) until it kills itself there."""
    port = free_port()
    process = ServiceProcess(
        "services.notify", desk, port, tmp_path / "notify.log", {"DESK_NOTIFY_PORT": str(port)}
    )
    process.start(DESK_CRASH_AT=crash_at)
    await process.wait_ready()
    for n in range(tickets):
        await send_ticket(kafka, n, agent="li.na" if n % 2 else "wang.qiang")
    assert await process.wait_exit(90) == -9, process.logs()[-3000:]
    return process


async def send_ticket(kafka: KafkaProbe, n: int, agent: str | None = None, **customer: Any) -> None:
    stream = f"ticket-{ticket_id(n)}"
    for version, event in enumerate((received(n, **customer), triaged(n)), start=1):
        await publish_event(
            kafka, "intake.events", event, stream_id=stream, version=version, subject=ticket_id(n)
        )
    if agent:
        assigned = assignment(ticket_id(n), received(n).number, agent)
        await publish_event(
            kafka, "dispatch.events", assigned, stream_id=stream, subject=ticket_id(n)
        )


@pytest.mark.asyncio
async def test_one_acknowledgement_with_number_and_expected_time_and_a_signed_assignment(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    with smtp_server() as smtp, http_receiver() as http:
        desk = notify_settings(await intake_clock(settings), tmp_path, smtp, http)
        async with running(intake(desk)), running(dispatch(desk)), running(notify(desk)):
            for _ in range(3):  # the adapter sends the same request three times
                await kafka.publish("requests.incoming", encode(valid("ack-1")))
            await kafka.await_records(EVENTS, kind("sent"), count=2)
            [assigned] = await kafka.await_records(
                "dispatch.events",
                lambda r: r.header("ce_type") == "servicedesk.ticket.assigned.v1",
            )
            agent, number = data(assigned)["agent_id"], data(assigned)["number"]
            await kafka.all_records(EVENTS, settle=1.5)  # let anything extra arrive
            conn = await connect(desk.require_database_url())
            try:
                found = await find_ticket(conn, number)
                assert found is not None
                said = [
                    e.summary()
                    for e in await timeline(
                        conn, found, KeyStore(MasterKey.from_settings(settings))
                    )
                ]
            finally:
                await conn.close()
        [mail] = smtp.to("wang.fang@example.com")
        assert len(smtp.messages) == 1
        assert mail["Subject"] == f"您的服务请求 [{number}] 已受理"
        body = mail.get_content()
        assert number in body
        # A general printer fault: first response within 2 h of the Asia/Shanghai office day.
        assert "我们预计在 2026-11-20 11:30 (Asia/Shanghai) 前给您答复" in body
        [hook] = http.at(f"/agents/{agent}")
        assert len(http.all()) == 1
        expected = sign("test-secret", hook.headers["x-desk-timestamp"], hook.body)
        assert hook.headers["x-desk-signature"] == expected
        assert hook.headers["idempotency-key"] == hook.json()["notice"]
        assert (hook.json()["template"], hook.json()["number"]) == ("assignment", number)
    assert "acknowledgement (zh) sent to customer by email w***@example.com, attempt 1" in said


@pytest.mark.asyncio
async def test_killed_mid_batch_and_restarted_loses_nothing_and_repeats_nothing_recorded(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """Killed as it claims a batch, with earlier sends in flight: after the restart every
    notice is delivered; none recorded as sent is sent again, and a repeat (a send the kill
    caught between the receiver's answer and its record) carries the same key."""
    tickets = 20
    with smtp_server() as smtp, http_receiver() as http:
        desk = notify_settings(settings, tmp_path, smtp, http, notify_batch=4)
        # Dies holding a claimed batch.
        process = await notify_killed_at(desk, kafka, tmp_path, "notify.before_send:3", tickets)
        partial = len(smtp.messages) + len(http.all())
        assert 0 < partial < 2 * tickets
        conn = await connect(desk.require_database_url(), schema="notify")
        try:
            recorded = {r[0] for r in await conn.fetch(
                "SELECT notice_key FROM deliveries WHERE status = 'sent'"
            )}  # fmt: skip
            leased = await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sending'")
        finally:
            await conn.close()
        # The batch it held: however many were due at its claim (woken as each consumer batch
        # commits, a claim may hold fewer than notify_batch), never none.
        assert leased >= 1
        process.start()
        try:

            async def delivered() -> int:
                return len(smtp.messages) + len(http.all())

            await eventually(
                delivered,
                lambda n: n >= 2 * tickets,
                timeout=60,
                what="every notice delivered",
            )
            await kafka.await_records(EVENTS, kind("sent"), count=2 * tickets)
            await kafka.all_records(EVENTS, settle=3.0)  # leases run out: any repeat shows now
        finally:
            await process.stop()
        mails = Counter(str(m["X-Desk-Notice"]) for m in smtp.messages)
        hooks = Counter(r.headers["idempotency-key"] for r in http.all())
    assert len(mails) == tickets and len(hooks) == tickets
    sent = mails + hooks
    assert all(sent[key] == 1 for key in recorded), (recorded, sent)
    repeated = {key for key, times in sent.items() if times > 1}
    assert len(repeated) <= leased, repeated  # only what was on the wire at the kill
    numbers = sorted(set(m["X-Desk-Ticket"] for m in smtp.messages))
    assert numbers == sorted(received(n).number for n in range(tickets))


@pytest.mark.asyncio
async def test_killed_after_the_channel_accepted_resends_under_the_same_key(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """The one duplicate window: a channel accepted a notice, the process died before recording
    it. The notice goes out again after its lease, with the same Message-ID / Idempotency-Key,
    so a receiver that de-duplicates by key sees it once; its outcome is recorded once."""
    tickets = 12
    with smtp_server() as smtp, http_receiver() as http:
        desk = notify_settings(settings, tmp_path, smtp, http, notify_batch=4)
        # Dies after a channel accepted a notice, before its outcome is recorded.
        process = await notify_killed_at(desk, kafka, tmp_path, "notify.after_send:5", tickets)
        process.start()
        try:
            await kafka.await_records(EVENTS, kind("sent"), count=2 * tickets)
            outcomes = await kafka.all_records(EVENTS, settle=3.0)
        finally:
            await process.stop()
        mails = Counter(str(m["Message-ID"]) for m in smtp.messages)
        hooks = Counter(r.headers["idempotency-key"] for r in http.all())
    # Every notice arrived, none under a second key, and the window did resend something.
    assert len(mails) == tickets and len(hooks) == tickets
    assert sum(mails.values()) + sum(hooks.values()) > 2 * tickets
    # One recorded outcome per notice (the relay may publish an event twice: same event id).
    recorded: dict[str, set[str | None]] = {}
    for r in outcomes:
        if kind("sent")(r):
            recorded.setdefault(data(r)["notice_key"], set()).add(r.header("ce_id"))
    assert len(recorded) == 2 * tickets
    assert all(len(ids) == 1 for ids in recorded.values())


@pytest.mark.asyncio
async def test_retries_until_smtp_accepts_and_a_dead_webhook_fails_alone(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    with smtp_server(refuse=3) as smtp, http_receiver(failing={"/agents/li.na"}) as http:
        desk = notify_settings(
            settings,
            tmp_path,
            smtp,
            http,
            notify_max_attempts=4,
            notify_sms_endpoint=http.url("/sms"),
        )
        async with running(notify(desk)):
            await send_ticket(kafka, 1, agent="li.na")
            await send_ticket(kafka, 2, agent="wang.qiang")
            await send_ticket(kafka, 3, email=None, phone="+8613800001234")  # SMS only
            [failed] = await kafka.await_records(EVENTS, kind("failed"), timeout=60)
            sent = await kafka.await_records(EVENTS, kind("sent"), count=4, timeout=60)
            [dead] = await kafka.await_records("notify.deliveries.dlq", lambda r: True)
            # The operator fixes the receiver and replays the dead letter: sent, once.
            http.failing.clear()
            conn = await connect(desk.require_database_url(), schema="notify")
            producer = make_producer(desk, client_id="test-replay")
            await producer.start()
            try:
                [letter] = await list_dead_letters(conn, "notify")
                await replay_dead_letter(conn, producer, letter)
                letters = await conn.fetchval(
                    "SELECT count(*) FROM dead_letters WHERE consumer = 'notify.delivery'"
                )
            finally:
                await producer.stop()
                await conn.close()
            [replayed] = await kafka.await_records(
                EVENTS, lambda r: kind("sent")(r) and data(r)["recipient"] == "agent:li.na"
            )
            await kafka.all_records(EVENTS, settle=1.0)
    assert (data(failed)["recipient"], data(failed)["attempts"]) == ("agent:li.na", 4)
    assert data(failed)["reason"] == "attempts_exhausted"
    assert data(failed)["address"] == "http://127.0.0.1/***"  # masked
    assert len(http.at("/agents/li.na")) == 5  # four failures, then the replayed one
    assert (data(replayed)["attempts"], data(replayed)["notice_key"].encode()) == (1, dead.key)
    assert len(http.at("/agents/wang.qiang")) == 1
    [sms] = http.at("/sms")
    assert (sms.json()["to"], sms.json()["template"]) == ("+8613800001234", "acknowledgement")
    assert sms.headers["x-desk-signature"] == sign(
        "test-secret", sms.headers["x-desk-timestamp"], sms.body
    )
    assert dead.header("dlq_reason") == "delivery_failed"
    assert dead.key == data(failed)["notice_key"].encode()
    by_template = {data(r)["template"]: data(r) for r in sent if data(r)["channel"] == "email"}
    assert smtp.refused == 3 and len(smtp.messages) == 2
    assert sorted(data(r)["attempts"] for r in sent if data(r)["channel"] == "email")[-1] >= 2
    assert by_template["acknowledgement"]["address"] == "c***@example.com"
    assert letters == 1


@pytest.mark.asyncio
async def test_a_customer_notice_ahead_of_the_receipt_waits_for_it(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """dispatch's topic ran ahead of intake's: the assignment and the resolution wait for the
    receipt — nothing retried, nothing dead-lettered, operators see them waiting and for how
    long — and go out once, when the receipt is read: the agent's with the ticket's subject."""
    with smtp_server() as smtp, http_receiver() as http:
        desk, time = await reporting_at_t0(settings, tmp_path, smtp, http)
        async with running(notify(desk)) as service:
            resolved = TicketResolved(
                ticket_id=ticket_id(7),
                number=received(7).number,
                agent_id="li.na",
                resolution="换了新的硒鼓。",
            )
            stream = f"ticket-{ticket_id(7)}"
            assigned = assignment(ticket_id(7), received(7).number, "li.na")
            for version, early in enumerate((assigned, resolved), start=1):
                await publish_event(
                    kafka,
                    "dispatch.events",
                    early,
                    stream_id=stream,
                    version=version,
                    subject=ticket_id(7),
                )

            async def waiting() -> int:
                return int(await service.pool.fetchval("SELECT count(*) FROM waiting_events"))

            async def outstanding() -> tuple[float, float, float]:
                return (
                    gauge("desk_notify_events_waiting_for_receipt"),
                    gauge("desk_notify_oldest_event_waiting_seconds"),
                    gauge("desk_notify_notices_pending"),
                )

            # Handled (a failed handler leaves no row: it would be retried), nothing to send.
            await eventually(waiting, lambda n: n == 2, what="assignment and resolution wait")
            await time.set(T0 + timedelta(minutes=10))
            await eventually(outstanding, lambda g: g == (2, 600, 0), what="waiting, 10 min")
            assert smtp.messages == [] and agent_notices(http, "li.na", "assignment") == []
            for version, event in enumerate((received(7), triaged(7)), start=1):
                await publish_event(
                    kafka,
                    "intake.events",
                    event,
                    stream_id=stream,
                    version=version,
                    subject=ticket_id(7),
                )
            await kafka.await_records(EVENTS, kind("sent"), count=3)
            await kafka.all_records(EVENTS, settle=1.5)  # let anything extra arrive
            assert await waiting() == 0
            letters = await service.pool.fetchval("SELECT count(*) FROM dead_letters")
            await eventually(outstanding, lambda g: g == (0, 0, 0), what="nothing outstanding")
        subjects = sorted(str(m["Subject"]) for m in smtp.messages)
        [told] = agent_notices(http, "li.na", "assignment")
    number = received(7).number
    assert letters == 0
    assert subjects == sorted([f"您的服务请求 [{number}] 已受理", f"您的请求 [{number}] 已解决"])
    assert told["subject"] == f"新工单 {number}：问题 7"


@pytest.mark.asyncio
async def test_a_reply_read_before_its_tickets_assignment_waits_for_it(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """intake's topic ran ahead of dispatch's: the customer's reply owes the assignee a notice
    and nobody has the ticket yet as far as notify knows — it waits, and li.na hears of it once
    her assignment is read (before the fix: nobody was ever told)."""
    with smtp_server() as smtp, http_receiver() as http:
        desk, _ = await reporting_at_t0(settings, tmp_path, smtp, http)
        async with running(notify(desk)) as service:
            await send_ticket(kafka, 8)
            routed = earlier_event_id()  # dispatch assigned it before the reply; notify lags
            stream = f"ticket-{ticket_id(8)}"
            reply = CustomerReplied(
                ticket_id=ticket_id(8), number=received(8).number, channel="email",
                channel_message_id="r-8@example.com", received_at=T0,
                subject="Re: 问题 8", body="还是不行。",
            )  # fmt: skip
            await publish_event(kafka, "intake.events", reply, stream_id=stream, version=3)
            await kafka.await_records(EVENTS, kind("sent"), count=1)  # the acknowledgement

            async def waiting() -> int:
                return int(await service.pool.fetchval("SELECT count(*) FROM waiting_events"))

            async def shown() -> float:
                return gauge("desk_notify_events_waiting_for_receipt")

            await eventually(waiting, lambda n: n == 1, what="the reply waits")
            await eventually(shown, lambda g: g == 1, what="operators see it waiting")
            assert agent_notices(http, "li.na", "customer_reply") == []
            assigned = assignment(ticket_id(8), received(8).number, "li.na")
            await publish_event(
                kafka, "dispatch.events", assigned, stream_id=stream, event_id=routed
            )
            await kafka.await_records(EVENTS, kind("sent"), count=3)
            await kafka.all_records(EVENTS, settle=1.5)  # let anything extra arrive
            assert await waiting() == 0
            made = await service.pool.fetch(
                "SELECT template FROM deliveries WHERE recipient = 'agent:li.na' ORDER BY id"
            )
        # Made (and sent) in the order their events were recorded: the assignment first.
        assert [r[0] for r in made] == ["assignment", "customer_reply"]
        [told] = agent_notices(http, "li.na", "customer_reply")
        assert len(agent_notices(http, "li.na", "assignment")) == 1
        assert len(smtp.messages) == 1  # the acknowledgement, nothing else to the customer
    assert received(8).number in told["subject"]


@pytest.mark.asyncio
async def test_a_notice_httpx_cannot_parse_fails_alone_once_and_the_others_go_out_once(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """A webhook address httpx refuses to parse (stored before addresses were checked at policy
    load) fails once, as refused; the notices sent in the same round are settled and never sent
    again, however many lease periods pass."""
    with smtp_server() as smtp, http_receiver() as http:
        desk = notify_settings(settings, tmp_path, smtp, http, clock="driven")
        time = DrivenTime(desk, "notify")
        await time.set(T0)
        async with running(notify(desk)) as service:
            bad = Notice(
                notice_key="stored-before-the-check:agent:li.na:assignment",
                ticket_id=ticket_id(90),
                number="REQ-2026-000090",
                cause_event_id="stored-before-the-check",
                recipient="agent:li.na",
                channel="webhook",
                address="http://[::1",
                template="assignment",
                language="zh",
                subject="s",
                body="b",
            )
            async with service.pool.acquire() as conn:
                await enqueue(conn, [bad], "v0", T0)
            for n in (1, 2, 3):
                await send_ticket(kafka, n, agent="li.na")
            await kafka.await_records(EVENTS, kind("sent"), count=6)
            # Many 2 s leases: anything unsettled would go again. The failure is awaited after
            # them: the bad notice, claimed as the worker starts, may wait past its 375 ms to
            # start sending on a loaded machine and be left to its lease, which only the
            # driven clock can end (a fresh clone's run failed so, 2026-12-04).
            for minutes in (1, 3, 7):
                await time.set(T0 + timedelta(minutes=minutes))
                await kafka.all_records(EVENTS, settle=1.0)
            [failed] = await kafka.await_records(EVENTS, kind("failed"))
            outcomes = await kafka.all_records(EVENTS, settle=0.5)
            row = await service.pool.fetchrow(
                "SELECT status, attempts FROM deliveries WHERE notice_key = $1", bad.notice_key
            )
        hooks = Counter(r.headers["idempotency-key"] for r in http.all())
        mails = Counter(str(m["Message-ID"]) for m in smtp.messages)
    assert len(hooks) == 3 and set(hooks.values()) == {1}
    assert len(mails) == 3 and set(mails.values()) == {1}
    assert (data(failed)["notice_key"], data(failed)["reason"]) == (bad.notice_key, "refused")
    assert data(failed)["attempts"] == 1
    assert sum(1 for r in outcomes if kind("failed")(r)) == 1
    assert sum(1 for r in outcomes if kind("sent")(r)) == 6
    assert row is not None and tuple(row) == ("failed", 1)


@pytest.mark.asyncio
async def test_a_reopen_and_a_poor_score_reach_the_agent_and_the_supervisor_sealed_when_kept(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """The survey link's reopen tells the ticket's agent who and why (a reopen by the customer's
    reply does not: the reply told them); a score of 1 tells the group's supervisor with the
    comment, which ``deliveries`` keeps sealed under the customer like every notice's text."""
    with smtp_server() as smtp, http_receiver() as http:
        desk = notify_settings(await intake_clock(settings), tmp_path, smtp, http)
        async with running(intake(desk)), running(notify(desk)) as service:
            await kafka.publish("requests.incoming", encode(valid("reopen-1")))
            [receipt] = await kafka.await_records(
                "intake.events",
                lambda r: r.header("ce_type") == "servicedesk.ticket.received.v1",
            )
            ticket, number = data(receipt)["ticket_id"], data(receipt)["number"]
            # The customer's acknowledgement sent: notify has read the receipt (its subject).
            await kafka.await_records(EVENTS, kind("sent"))
            stream = f"ticket-{ticket}"
            comment = "没有人回电话，问题也没解决。"
            for event in (
                assignment(ticket, number, "li.na"),
                TicketReopened(
                    ticket_id=ticket, number=number, actor="customer", reason="还是卡纸"
                ),
                TicketReopened(
                    ticket_id=ticket,
                    number=number,
                    actor="customer",
                    reason="customer replied: 还是不行",
                    by_reply=True,
                ),
                SatisfactionRecorded(
                    ticket_id=ticket, number=number, score=1, comment=comment, actor="customer"
                ),
            ):
                await publish_event(kafka, "dispatch.events", event, stream_id=stream)
            # The acknowledgement, the assignment, one reopen notice, one to the supervisor.
            await kafka.await_records(EVENTS, kind("sent"), count=4)
            outcomes = await kafka.all_records(EVENTS, settle=1.5)  # let anything extra arrive
            kept = await service.pool.fetch(
                "SELECT template, subject, body FROM deliveries WHERE template = ANY($1)",
                ["reopened", "dissatisfied"],
            )
    assert sum(1 for r in outcomes if kind("sent")(r)) == 4
    [reopened] = agent_notices(http, "li.na", "reopened")
    assert reopened["text"] == f"李娜，已解决的工单 {number}（打印机卡纸）被客户重新打开：还是卡纸"
    [poor] = agent_notices(http, "zhao.lei", "dissatisfied")
    assert poor["subject"] == f"客户不满意：{number}（1/5）"
    assert comment in poor["text"]
    assert sorted(row["template"] for row in kept) == ["dissatisfied", "reopened"]
    for row in kept:
        for column in (row["subject"], row["body"]):
            assert comment not in column and "卡纸" not in column
            assert ref_in(from_column(column)) is not None, "sealed under the customer"

"""sla end to end: real broker, real PostgreSQL, services running, time driven by the test."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from services.cli.tickets import timeline
from services.dispatch.app import build as dispatch
from services.dispatch.events import TicketClassified, TicketResponded
from services.intake.app import build as intake
from services.sla import storage
from services.sla.app import build as sla
from services.sla.report import build_report
from services.sla.storage import ClockBoard
from shared.database import connect
from shared.deadletter import Record
from shared.keystore import KeyStore, MasterKey
from shared.local.ports import free_port
from shared.projection import rebuild
from shared.settings import Settings
from tests.intake.requests import encode, valid
from tests.sla.support import SLA, T0, classified, write_policy
from tests.support.credentials import token
from tests.support.events import publish_event, publish_mark
from tests.support.kafka import KafkaProbe
from tests.support.processes import ServiceProcess
from tests.support.services import running
from tests.support.time import DrivenTime
from tests.support.waiting import eventually

SLA_EVENTS = "sla.events"


def data(record: Record) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(record.value)["data"]
    return value


def sla_kind(name: str, **fields: Any) -> Any:
    def match(record: Record) -> bool:
        if record.header("ce_type") != f"servicedesk.sla.{name}.v1":
            return False
        found = data(record)
        return all(found.get(k) == v for k, v in fields.items())

    return match


@pytest.fixture
def driven(settings: Settings, tmp_path: Path) -> Settings:
    return settings.replace(clock="driven", policy_file=write_policy(tmp_path / "policy.yaml"))


async def send_classified(kafka: KafkaProbe, ticket: TicketClassified, at: datetime) -> None:
    await publish_event(
        kafka,
        "dispatch.events",
        ticket,
        stream_id=f"ticket-{ticket.ticket_id}",
        subject=ticket.ticket_id,
        source="servicedesk/dispatch",
        time=at,
    )


async def send_answer(kafka: KafkaProbe, ticket: TicketClassified, at: datetime) -> None:
    """dispatch's record of an agent's first response, stamped ``at``: the ticket's second
    event (sla takes an event at or before the last it took for a redelivery)."""
    answer = TicketResponded(
        ticket_id=ticket.ticket_id, number=ticket.number, agent_id="agent-1",
        message="Use the reset link.", first_response=True,
    )  # fmt: skip
    await publish_event(
        kafka,
        "dispatch.events",
        answer,
        stream_id=f"ticket-{ticket.ticket_id}",
        version=2,
        subject=ticket.ticket_id,
        time=at,
    )


async def command(
    kafka: KafkaProbe, at: datetime, number: str, kind: str, actor: str, **fields: Any
) -> None:
    """A command signed with a token issued ``at`` the driven clock's time (dispatch checks a
    token's times against its own clock)."""
    body = {"command_id": str(uuid.uuid4()), "type": kind, "ticket_number": number,
            "actor": actor, **fields}  # fmt: skip
    signed_by = token(kafka.settings, actor, now=at)
    await kafka.command("tickets.commands", body, key=number, token=signed_by)


@pytest.mark.asyncio
async def test_no_response_breaches_at_30_minutes_and_a_response_at_29_meets_it(
    driven: Settings, kafka: KafkaProbe
) -> None:
    time = DrivenTime(driven, "intake", "dispatch", "sla")
    await time.set(T0)
    phone = {"channel": "phone", "subject": "How do I reset my password?",
             "description": "I forgot it", "product_line": None,
             "customer": {"name": "Ann", "phone": "+4930123456", "language": "en"}}  # fmt: skip
    async with running(intake(driven)), running(dispatch(driven)), running(sla(driven)):
        for message_id in ("answered", "ignored"):
            await kafka.publish("requests.incoming", encode(valid(message_id, **phone)))
        started = await kafka.await_records(
            SLA_EVENTS, sla_kind("clock_started", metric="first_response"), count=2
        )
        assert {data(r)["deadline"] for r in started} == {"2026-11-20T08:30:00Z"}
        assigned = await kafka.await_records(
            "dispatch.events",
            lambda r: r.header("ce_type") == "servicedesk.ticket.assigned.v1",
            count=2,
        )
        (answered, agent), (ignored, _) = sorted(
            (data(r)["number"], data(r)["agent_id"]) for r in assigned
        )

        at = T0 + timedelta(minutes=29)
        await time.set(at)
        await command(kafka, at, answered, "accept", agent)
        await command(kafka, at, answered, "respond", agent, message="Use the reset link.")
        await command(kafka, at, answered, "request_customer_info", agent, question="Did it work?")
        [met] = await kafka.await_records(
            SLA_EVENTS, sla_kind("clock_met", metric="first_response", number=answered)
        )
        assert (data(met)["late"], data(met)["elapsed_s"]) == (False, 29 * 60), data(met)
        [paused] = await kafka.await_records(
            SLA_EVENTS, sla_kind("clock_paused", metric="resolution", number=answered)
        )
        received = datetime.fromisoformat(valid()["received_at"])
        since_receipt = (T0 + timedelta(minutes=29) - received).total_seconds()
        assert data(paused)["elapsed_s"] == since_receipt  # resolution counts from receipt

        await time.set(T0 + timedelta(minutes=31))
        [breach] = await kafka.await_records(
            SLA_EVENTS, sla_kind("clock_breached", metric="first_response")
        )
        assert data(breach)["number"] == ignored
        assert data(breach)["due_at"] == "2026-11-20T08:30:00Z"
        [level_1] = await kafka.await_records(SLA_EVENTS, sla_kind("escalated", level=1))
        assert (data(level_1)["number"], data(level_1)["metric"]) == (ignored, "first_response")
        [escalated] = await kafka.await_records(
            "dispatch.events", lambda r: r.header("ce_type") == "servicedesk.ticket.escalated.v1"
        )
        assert (data(escalated)["number"], data(escalated)["level"]) == (ignored, 1)
        assert data(escalated)["cause_event_id"] == level_1.header("ce_id")
        everything = await kafka.all_records(SLA_EVENTS, settle=1.0)
        conn = await connect(driven.require_database_url())
        try:
            story = await timeline(
                conn, data(breach)["ticket_id"], KeyStore(MasterKey.from_settings(driven))
            )
        finally:
            await conn.close()
    said = {e.what: e.summary() for e in story}
    assert "no fulfilling event within 30 min" in said["sla.clock_breached"]
    assert f"cause {data(breach)['cause_event_id']}" in said["sla.clock_breached"]
    assert "escalated to level 1" in said["ticket.escalated"]
    breaches = [data(r)["number"] for r in everything if sla_kind("clock_breached")(r)]
    assert breaches == [ignored]


@pytest.mark.asyncio
async def test_a_friday_evening_request_counts_business_minutes_only(
    driven: Settings, kafka: KafkaProbe
) -> None:
    # The test policy's web requests answer within 30 min of a Mon-Fri 09:00-18:00 Berlin
    # calendar whose Monday 2026-11-23 is a holiday.
    friday = datetime.fromisoformat("2026-11-20T17:50:00+01:00")
    time = DrivenTime(driven, "sla", marks=kafka)
    await time.set(friday)
    # Committing its offsets only every ten minutes, sla commits what it has applied as soon
    # as a timer waits on it: the warnings and the breach still fire at once.
    async with running(sla(driven.replace(consumer_commit_interval="10m"))):
        await send_classified(kafka, classified(1, channel="web", received_at=friday), friday)
        [started] = await kafka.await_records(
            SLA_EVENTS, sla_kind("clock_started", metric="first_response")
        )
        assert data(started)["deadline"] == "2026-11-24T08:20:00Z"  # Tuesday 09:20 in Berlin
        await time.set(datetime.fromisoformat("2026-11-24T09:19:00+01:00"))
        warnings = await kafka.await_records(
            SLA_EVENTS, sla_kind("clock_warned", metric="first_response"), count=2
        )
        assert sorted(data(w)["due_at"] for w in warnings) == [
            "2026-11-24T08:12:30Z",
            "2026-11-24T08:17:00Z",
        ]
        await time.set(datetime.fromisoformat("2026-11-24T09:21:00+01:00"))
        [breach] = await kafka.await_records(
            SLA_EVENTS, sla_kind("clock_breached", metric="first_response")
        )
        assert data(breach)["due_at"] == "2026-11-24T08:20:00Z"


TICKETS = 60
LADDER = [("clock_warned", 0.75), ("clock_warned", 0.9), ("clock_breached", None),
          ("escalated", 1), ("escalated", 2), ("escalated", 3)]  # fmt: skip


def _fired(records: list[Record]) -> Counter[tuple[str, str, object]]:
    """(clock, kind, fraction or level) -> distinct events seen (by event id)."""
    seen: dict[str, tuple[str, str, object]] = {}
    for record in records:
        kind = (record.header("ce_type") or "").split(".")[2]
        body = data(record)
        if body.get("metric") == "first_response" and kind in {k for k, _ in LADDER}:
            detail = body.get("fraction", body.get("level"))
            seen[record.header("ce_id") or ""] = (body["clock_id"], kind, detail)
    return Counter(seen.values())


@pytest.mark.asyncio
async def test_warnings_and_levels_fire_once_with_two_instances_and_one_killed(
    driven: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    time = DrivenTime(driven, "sla", marks=kafka)
    await time.set(T0)
    instances = [
        ServiceProcess(
            "services.sla", driven, port, tmp_path / f"sla-{i}.log", {"DESK_SLA_PORT": str(port)}
        )
        for i, port in enumerate((free_port(), free_port()))
    ]
    try:
        for instance in instances:
            instance.start()
        for instance in instances:
            await instance.wait_ready()
        for n in range(TICKETS):
            await send_classified(kafka, classified(n), T0)
        await kafka.await_records(
            SLA_EVENTS, sla_kind("clock_started", metric="first_response"), count=TICKETS
        )
        # Each mark waits for the last to fire: a warning fired late with its breach is
        # stale and dropped.
        marks: list[tuple[int, str | None, dict[str, Any]]] = [
            (23, "clock_warned", {"fraction": 0.75}),
            (28, "clock_warned", {"fraction": 0.9}),
            (31, "escalated", {"level": 1}),
            (61, None, {}),
        ]
        for minutes, kind_, fields in marks:
            await time.set(T0 + timedelta(minutes=minutes))
            if kind_ is not None:
                await kafka.await_records(
                    SLA_EVENTS, sla_kind(kind_, **fields), count=TICKETS, timeout=60
                )
            else:
                instances[0].kill()  # mid-run: level 2 of every ticket is due right now
        await time.set(T0 + timedelta(minutes=91))
        records = await kafka.await_records(
            SLA_EVENTS, sla_kind("escalated", level=3), count=TICKETS, timeout=60
        )
        assert len({data(r)["clock_id"] for r in records}) == TICKETS
        everything = await kafka.all_records(SLA_EVENTS, settle=2.0)
    finally:
        for instance in instances:
            await instance.stop()
    fired = _fired(everything)
    clocks = {clock for clock, _, _ in fired}
    assert len(clocks) == TICKETS
    expected = {(clock, kind, detail): 1 for clock in clocks for kind, detail in LADDER}
    assert dict(fired) == expected
    conn = await connect(driven.require_database_url(), schema="sla")
    try:
        stored = await conn.fetch(
            "SELECT type, count(*) FROM events WHERE type LIKE 'servicedesk.sla.%' "
            "GROUP BY type ORDER BY type"
        )
    finally:
        await conn.close()
    counts = {row[0].split(".")[2]: row[1] for row in stored}
    assert counts["clock_warned"] == 2 * TICKETS
    assert counts["clock_breached"] == TICKETS
    assert counts["escalated"] == 3 * TICKETS


@pytest.mark.asyncio
async def test_after_a_restart_overdue_timers_fire_at_once_and_the_model_rebuilds(
    driven: Settings, kafka: KafkaProbe
) -> None:
    time = DrivenTime(driven, "sla", marks=kafka)
    await time.set(T0)
    async with running(sla(driven)):
        for n in range(5):
            await send_classified(kafka, classified(n), T0)
        await kafka.await_records(
            SLA_EVENTS, sla_kind("clock_started", metric="first_response"), count=5
        )
    await time.set(T0 + timedelta(hours=3))  # while sla is down every mark passes
    service = sla(driven)
    async with running(service):
        levels = await kafka.await_records(SLA_EVENTS, sla_kind("escalated", level=3), count=5)
        assert all(data(r)["due_at"] == "2026-11-20T09:30:00Z" for r in levels)
        async with service.pool.acquire() as conn:
            await eventually(
                lambda: conn.fetchval("SELECT count(*) FROM clocks WHERE level = 3"),
                lambda n: n == 5,
                what="level 3 projected",
            )
            live = await conn.fetch("SELECT * FROM clocks ORDER BY clock_id")
            report = await build_report(conn, T0 - timedelta(days=1))
            await rebuild(conn, service.store, ClockBoard())
            rebuilt = await conn.fetch("SELECT * FROM clocks ORDER BY clock_id")
    assert [dict(r) for r in rebuilt] == [dict(r) for r in live]
    first = [c for c in report.compliance if c.metric == "first_response"]
    assert [(c.group_id, c.met, c.breached, c.ratio) for c in first] == [("front-line", 0, 5, 0.0)]
    assert report.tickets_breached_open == 5


@pytest.mark.asyncio
async def test_a_response_in_time_read_after_the_deadline_meets_the_clock(
    driven: Settings, kafka: KafkaProbe
) -> None:
    """sla stopped while the agent answered at 29 minutes and starts again at 31: the timer
    must wait for the consumer to read that answer, not breach and escalate first."""
    time = DrivenTime(driven, "sla", marks=kafka)
    await time.set(T0)
    ticket = classified(7)
    async with running(sla(driven)):
        await send_classified(kafka, ticket, T0)
        await kafka.await_records(SLA_EVENTS, sla_kind("clock_started", metric="first_response"))
    await send_answer(kafka, ticket, T0 + timedelta(minutes=29))
    await time.set(T0 + timedelta(minutes=31))
    async with running(sla(driven)):
        [met] = await kafka.await_records(
            SLA_EVENTS, sla_kind("clock_met", metric="first_response")
        )
        everything = await kafka.all_records(SLA_EVENTS, settle=2.0)
    assert (data(met)["late"], data(met)["elapsed_s"]) == (False, 29 * 60)
    fired = {kind for _, kind, _ in _fired(everything)}
    assert not fired & {"clock_breached", "escalated"}, fired


@pytest.mark.asyncio
async def test_an_answer_in_time_published_late_is_waited_for_and_meets_the_clock(
    driven: Settings, kafka: KafkaProbe
) -> None:
    """dispatch recorded the agent's answer at 29 minutes, but its relay stopped before
    publishing it. At 31 minutes sla has read everything on the topic and its clock is past the
    deadline; dispatch's marks say it has published only up to 28 minutes, so the breach waits
    (the warnings, due before the mark, fire). Once the answer and a mark past it are out, the
    clock is met, on time."""
    time = DrivenTime(driven, "sla")
    await time.set(T0)
    ticket = classified(8)
    async with running(sla(driven)):
        await send_classified(kafka, ticket, T0)
        await kafka.await_records(SLA_EVENTS, sla_kind("clock_started", metric="first_response"))
        await publish_mark(kafka, T0 + timedelta(minutes=28))
        await time.set(T0 + timedelta(minutes=31))
        await kafka.await_records(SLA_EVENTS, sla_kind("clock_warned", fraction=0.9))
        held = await kafka.all_records(SLA_EVENTS, settle=2.0)
        assert not {kind for _, kind, _ in _fired(held)} & {"clock_breached", "escalated"}
        await send_answer(kafka, ticket, T0 + timedelta(minutes=29))  # recorded then
        await publish_mark(kafka, T0 + timedelta(minutes=31))
        [met] = await kafka.await_records(
            SLA_EVENTS, sla_kind("clock_met", metric="first_response")
        )
        everything = await kafka.all_records(SLA_EVENTS, settle=2.0)
    assert (data(met)["late"], data(met)["elapsed_s"]) == (False, 29 * 60)
    assert not {kind for _, kind, _ in _fired(everything)} & {"clock_breached", "escalated"}


@pytest.mark.asyncio
async def test_a_quiet_ticket_breaches_its_progress_clock_each_period_and_it_runs_again(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """The timer worker restarts a repeating clock at its breach: a progress notice each 4 h of
    quiet, and the clock's row is running again, not breached for good."""
    quiet = {
        "starts": "dispatched", "fulfilled_by": ["resolved"], "warns": False,
        "escalates": False, "repeats": True, "restarts_on": ["responded"],
    }  # fmt: skip
    policy = {
        **SLA,
        "metrics": {**SLA["metrics"], "customer_update": quiet},
        "targets": [*SLA["targets"], {"metric": "customer_update", "target": "4h",
                                      "calendar": "always"}],
    }  # fmt: skip
    driven = settings.replace(
        clock="driven", policy_file=write_policy(tmp_path / "policy.yaml", policy)
    )
    time = DrivenTime(driven, "sla", marks=kafka)
    await time.set(T0)
    service = sla(driven)
    async with running(service):
        await send_classified(kafka, classified(1), T0)
        await kafka.await_records(SLA_EVENTS, sla_kind("clock_started", metric="customer_update"))
        for period in (1, 2):
            await time.set(T0 + timedelta(hours=4 * period, minutes=1))
            await kafka.await_records(
                SLA_EVENTS, sla_kind("clock_breached", metric="customer_update", run=period)
            )
            await kafka.await_records(
                SLA_EVENTS, sla_kind("clock_started", metric="customer_update", run=period + 1)
            )
        async with service.pool.acquire() as conn:
            row = await eventually(
                lambda: conn.fetchrow(
                    "SELECT run, status, due_at FROM clocks WHERE metric = 'customer_update'"
                ),
                lambda r: r is not None and r["run"] == 3,
                what="the third run projected",
            )
            report = await build_report(conn, T0 - timedelta(days=1))
            runs = await conn.fetch("SELECT * FROM clock_runs ORDER BY run")
            await rebuild(conn, service.store, ClockBoard())
            rebuilt = await conn.fetch("SELECT * FROM clock_runs ORDER BY run")
    assert row is not None and row["status"] == "running", "breached twice, and running again"
    quiet_periods = [c for c in report.compliance if c.metric == "customer_update"]
    assert [(c.met, c.breached) for c in quiet_periods] == [(0, 2)], "each quiet period counts"
    assert [(r["run"], r["status"]) for r in runs] == [(1, "stopped"), (2, "stopped")]
    assert [dict(r) for r in rebuilt] == [dict(r) for r in runs]
    late_by = abs(row["due_at"] - (T0 + timedelta(hours=12, minutes=1)))
    assert late_by < timedelta(seconds=1), "due 4 h after the last firing"


@pytest.mark.asyncio
async def test_clocks_due_by_their_row_that_fire_nothing_are_not_claimed_in_a_spin(
    driven: Settings, kafka: KafkaProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row's due moment that the clock's state does not bear out (a calendar that once
    answered otherwise: the spring-forward night's overlapping hours) was claimed, fired
    nothing, and — its moment past — was claimed again 5 ms after each round (a round of
    queries to PostgreSQL and the broker, over and over, for as long as it lasted; five rounds
    in these 3 s on Tansu). Now such a round waits the poll interval, and says which clocks."""
    desk = driven.replace(sla_timer_interval="2s")
    time = DrivenTime(desk, "sla", marks=kafka)
    await time.set(T0)
    claims = 0
    claim_due = storage.claim_due

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        return await claim_due(*args, **kwargs)

    monkeypatch.setattr(storage, "claim_due", counted)
    service = sla(desk)
    async with running(service):
        await send_classified(kafka, classified(1), T0)
        await kafka.await_records(SLA_EVENTS, sla_kind("clock_started", metric="resolution"))
        async with service.pool.acquire() as conn:
            await conn.execute("UPDATE clocks SET due_at = $1", T0 - timedelta(minutes=1))
        with structlog.testing.capture_logs() as logs:
            await time.set(T0 + timedelta(seconds=1))  # dispatch's marks pass the rows' moment
            began = claims
            await asyncio.sleep(3)
            during = claims - began
    assert 1 <= during <= 2, f"{during} claims in 3 s"
    said = [e for e in logs if e["event"].startswith("timers due fire nothing")]
    assert said and len(said[0]["clocks"]) == 2

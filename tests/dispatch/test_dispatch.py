"""dispatch end to end: real broker, real PostgreSQL, the services running."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest

from services.dispatch import storage
from services.dispatch.app import build as dispatch
from services.intake.app import build as intake
from services.intake.events import TicketTriaged, ticket_stream
from shared.deadletter import Record
from shared.projection import rebuild
from shared.service import Service
from shared.settings import Settings
from tests.dispatch.support import POLICY_FILE, triaged
from tests.intake.requests import encode, intake_clock, valid
from tests.support.events import escalation, publish_event
from tests.support.kafka import KafkaProbe, rewind_group
from tests.support.personal import opened
from tests.support.services import running

EVENTS, COMMANDS, AGENTS = "dispatch.events", "tickets.commands", "agents.commands"
REJECTED = "tickets.commands.rejected"


def data(record: Record) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(record.value)["data"]
    return value


def kind(name: str) -> Any:
    return lambda r: r.header("ce_type") == f"servicedesk.ticket.{name}.v1"


async def send_triaged(
    kafka: KafkaProbe, ticket: TicketTriaged, partition: int | None = None
) -> None:
    await publish_event(
        kafka,
        "intake.events",
        ticket,
        stream_id=ticket_stream(ticket.ticket_id),
        version=2,
        subject=ticket.ticket_id,
        source="servicedesk/intake",
        partition=partition,
    )


async def send_command(
    kafka: KafkaProbe, number: str, kind_: str, actor: str, **fields: Any
) -> str:
    command_id = str(fields.pop("command_id", uuid.uuid4()))
    body = {
        "command_id": command_id,
        "type": kind_,
        "ticket_number": number,
        "actor": actor,
        **fields,
    }
    await kafka.command(COMMANDS, body, key=number)
    return command_id


@pytest.mark.asyncio
async def test_the_sop_seed_paths_through_intake_and_dispatch(
    settings: Settings, kafka: KafkaProbe
) -> None:
    requests = {
        "inquiry": valid(
            "seed-1",
            channel="phone",
            subject="How do I reset my password?",
            description="I forgot it",
            product_line=None,
            customer={"name": "Ann", "phone": "+4930123456", "language": "en"},
        ),
        "hardware": valid(
            "seed-2", subject="电脑无法开机", description="笔记本坏了", product_line="pc"
        ),
        "complex": valid(
            "seed-3",
            subject="系统瘫痪",
            description="整个部门都无法登录，服务中断",
            product_line="erp",
        ),
        "major complaint": valid(
            "seed-4", subject="投诉", description="再不解决我就找律师起诉", product_line=None
        ),
    }
    settings = await intake_clock(settings)
    async with running(intake(settings)), running(dispatch(settings)):
        for request in requests.values():
            await kafka.publish("requests.incoming", encode(request))
        assigned = await kafka.await_records(EVENTS, kind("assigned"), count=4)
        classified = await kafka.await_records(EVENTS, kind("classified"), count=4)
    assert not any(b"How do I reset" in c.value for c in classified)
    opened_ = [await opened(settings, data(c)) for c in classified]
    routes = {c["subject"]: (c["group_id"], c["route"]) for c in opened_}
    agents = {data(a)["number"]: (data(a)["group_id"], data(a)["agent_id"]) for a in assigned}
    by_subject = {c["subject"]: agents[c["number"]] for c in opened_}
    assert routes["How do I reset my password?"] == ("front-line", "complexity:simple")
    assert by_subject["How do I reset my password?"][0] == "front-line"
    assert routes["电脑无法开机"] == ("pc-hardware", "matrix:pc/*")
    assert by_subject["电脑无法开机"] == ("pc-hardware", "liu.yang")  # skilled in pc, speaks zh
    assert routes["系统瘫痪"] == ("experts", "complexity:complex")
    assert by_subject["系统瘫痪"][0] == "experts"
    assert routes["投诉"] == ("directors", "complaint:major")
    assert by_subject["投诉"] == ("directors", "sun.yu")


@pytest.fixture
def test_policy(settings: Settings) -> Settings:
    return settings.replace(policy_file=POLICY_FILE)


async def assigned_agents(kafka: KafkaProbe, count: int) -> list[str]:
    records = await kafka.await_records(EVENTS, kind("assigned"), count=count)
    return [data(r)["agent_id"] for r in records]


@pytest.mark.asyncio
async def test_round_robin_over_100_tickets(test_policy: Settings, kafka: KafkaProbe) -> None:
    async with running(dispatch(test_policy)):
        for n in range(100):
            await send_triaged(kafka, triaged(n, product_line="rr"))
        agents = await assigned_agents(kafka, 100)
    assert Counter(agents) == {"r1": 34, "r2": 33, "r3": 33}


@pytest.mark.asyncio
async def test_least_loaded_over_100_tickets_balances_open_work(
    test_policy: Settings, kafka: KafkaProbe
) -> None:
    service = dispatch(test_policy)
    async with running(service):
        for n in range(30):
            await send_triaged(kafka, triaged(n, product_line="ll"))
        first = await kafka.await_records(EVENTS, kind("assigned"), count=30)
        l1_tickets = [data(r)["number"] for r in first if data(r)["agent_id"] == "l1"]
        for number in l1_tickets:  # l1 finishes all of its tickets
            for step in ("accept", "start_work"):
                await send_command(kafka, number, step, "l1")
            await send_command(kafka, number, "resolve", "l1", resolution="done")
        await kafka.await_records(EVENTS, kind("resolved"), count=len(l1_tickets))
        for n in range(30, 100):
            await send_triaged(kafka, triaged(n, product_line="ll"))
        await kafka.await_records(EVENTS, kind("assigned"), count=100)
        loads = {
            r["agent_id"]: r["count"]
            for r in await service.pool.fetch(
                "SELECT agent_id, count(*) FROM tickets WHERE status = 'assigned' GROUP BY 1"
            )
        }
    assert len(l1_tickets) == 10
    assert sorted(loads.values()) == [30, 30, 30], loads
    assert sum(loads.values()) == 90


@pytest.mark.asyncio
async def test_skills_routing_over_100_tickets(test_policy: Settings, kafka: KafkaProbe) -> None:
    async with running(dispatch(test_policy)):
        for n in range(100):
            line = ("printer", "pc")[n % 2]
            await send_triaged(
                kafka, triaged(n, product_line=line, language=("zh", "en")[n % 5 == 0])
            )
        records = await kafka.await_records(EVENTS, kind("assigned"), count=100)
    for record in records:
        number = int(data(record)["number"].split("-")[2])
        expected = "s.any" if number % 5 == 0 else ("s.printer", "s.pc")[number % 2]
        assert data(record)["agent_id"] == expected, data(record)


@pytest.mark.asyncio
async def test_capacity_holds_and_the_queue_is_served_by_priority_then_age(
    test_policy: Settings, kafka: KafkaProbe
) -> None:
    service = dispatch(test_policy)
    async with running(service):
        await send_triaged(kafka, triaged(1, product_line="tiny"))
        await send_triaged(kafka, triaged(2, product_line="tiny"))
        await kafka.await_records(EVENTS, kind("assigned"), count=2)
        for n, priority in ((3, "low"), (4, "urgent"), (5, "normal"), (6, "urgent"), (7, "high")):
            await send_triaged(kafka, triaged(n, product_line="tiny", priority=priority))
            await kafka.await_records(EVENTS, kind("queued"), count=n - 2)
        over = await service.pool.fetchval(
            "SELECT count(*) FROM agents a WHERE (SELECT count(*) FROM tickets t WHERE "
            "t.agent_id = a.agent_id AND t.status = 'assigned') > a.capacity"
        )
        assert over == 0
        for body in (
            {"command_id": "shift-1", "type": "go_on_shift", "agent_id": "t3", "actor": "t3"},
            {
                "command_id": "cap-1",
                "type": "set_capacity",
                "agent_id": "t3",
                "actor": "boss",
                "capacity": 4,
            },
        ):
            await kafka.command(AGENTS, body, key="t3")
        await kafka.await_records(EVENTS, kind("assigned"), count=6)
        rows = await service.pool.fetch(
            "SELECT envelope::text FROM events WHERE type = 'servicedesk.ticket.assigned.v1' "
            "ORDER BY position"
        )
    from_queue = [
        json.loads(r[0])["data"] for r in rows if json.loads(r[0])["data"]["cause"] == "queue"
    ]
    assert [d["number"] for d in from_queue] == [
        "REQ-2026-000004",
        "REQ-2026-000006",
        "REQ-2026-000007",
        "REQ-2026-000005",
    ]
    assert all(d["agent_id"] == "t3" for d in from_queue)


@pytest.mark.asyncio
async def test_a_resolution_serves_the_head_of_a_long_queue_by_priority_then_age(
    test_policy: Settings, kafka: KafkaProbe
) -> None:
    """A ticket command reads a queue only as deep as it can serve (the room there is, plus
    two a message): a read that deep holds the queue's heads in order, and the heads served
    are still the queue's, though the queue is longer than any batch reads."""
    service = dispatch(test_policy)
    priorities = ["low", "normal", "high", "normal", "urgent", "low", "high", "urgent", "normal"]
    async with running(service):
        for n in (1, 2):
            await send_triaged(kafka, triaged(n, product_line="tiny"))
        assigned = await kafka.await_records(EVENTS, kind("assigned"), count=2)
        # One at a time: tickets go to two partitions, read in any order; queued_at is when
        # dispatch read each, so "older" must mean queued earlier, not published earlier.
        for queued, (n, priority) in enumerate(enumerate(priorities, start=3), start=1):
            await send_triaged(kafka, triaged(n, product_line="tiny", priority=priority))
            await kafka.await_records(EVENTS, kind("queued"), count=queued)
        async with service.pool.acquire() as conn:
            heads = await storage.queued(conn, {"tiny": 3, "round": 0})
        assert [t.number for t in heads.values()] == [
            "REQ-2026-000007",  # urgent, the older first
            "REQ-2026-000010",
            "REQ-2026-000005",  # then high; the other 6 queued are not read
        ]
        for record in assigned:
            number, agent = data(record)["number"], data(record)["agent_id"]
            await send_command(kafka, number, "accept", agent)
            await send_command(kafka, number, "start_work", agent)
            await send_command(kafka, number, "resolve", agent, resolution="done")
        await kafka.await_records(
            EVENTS, lambda r: kind("assigned")(r) and data(r)["cause"] == "queue", count=2
        )
        rows = await service.pool.fetch(
            "SELECT envelope::text FROM events WHERE type = 'servicedesk.ticket.assigned.v1' "
            "ORDER BY position"
        )
    assignments = [json.loads(r[0])["data"] for r in rows]
    served = [d["number"] for d in assignments if d["cause"] == "queue"]
    # the two urgent tickets, the older first, though lower-priority ones queued before them
    assert served == ["REQ-2026-000007", "REQ-2026-000010"]


@pytest.mark.asyncio
async def test_refused_commands_change_nothing_and_a_repeated_command_has_one_effect(
    test_policy: Settings, kafka: KafkaProbe
) -> None:
    service = dispatch(test_policy)
    async with running(service):
        await send_triaged(kafka, triaged(1, product_line="rr"))
        [assigned] = await kafka.await_records(EVENTS, kind("assigned"))
        number, agent = data(assigned)["number"], data(assigned)["agent_id"]
        other = next(a for a in ("r1", "r2", "r3") if a != agent)

        async def state() -> tuple[str, int]:
            row = await service.pool.fetchrow(
                "SELECT status, version FROM tickets WHERE number = $1", number
            )
            assert row is not None
            return row["status"], row["version"]

        before = await state()
        cases: list[tuple[str, str, dict[str, Any], str]] = [
            ("start_work", agent, {}, "illegal_transition"),
            ("accept", other, {}, "not_permitted"),
            ("accept", "customer", {}, "not_permitted"),
            ("resolve", agent, {"resolution": "x"}, "illegal_transition"),
            ("close", agent, {}, "illegal_transition"),
            ("reopen", "customer", {"reason": "x"}, "illegal_transition"),
            ("respond", "mallory", {"message": "x"}, "unknown_actor"),
            ("reassign", agent, {"to_group": "least", "reason": "x"}, "not_permitted"),
            ("record_satisfaction", "customer", {"score": 5}, "illegal_transition"),
        ]
        expected: dict[str | None, str] = {}
        for kind_, actor, fields, reason in cases:
            expected[await send_command(kafka, number, kind_, actor, **fields)] = reason
        await kafka.publish(COMMANDS, b"{not a command", key=number)
        expected[None] = "invalid_command"
        expected[await send_command(kafka, "REQ-2026-999999", "accept", agent)] = "unknown_ticket"
        rejected = await kafka.await_records(REJECTED, lambda r: True, count=len(cases) + 2)
        assert await state() == before

        accept_id = await send_command(kafka, number, "accept", agent)
        await send_command(kafka, number, "accept", agent, command_id=accept_id)  # redelivered
        await send_command(kafka, number, "respond", agent, message="on it")
        await kafka.await_records(EVENTS, kind("responded"))
        accepted = await kafka.await_records(EVENTS, kind("accepted"))
        status, version = await state()
    assert {data(r)["command_id"]: data(r)["reason"] for r in rejected} == expected
    for record in rejected:
        if data(record)["reason"] in ("illegal_transition", "not_permitted"):
            assert data(record)["status"] == "assigned"
            assert data(record)["detail"]
    assert len(accepted) == 1
    assert (status, version) == ("accepted", before[1] + 2)


@pytest.mark.asyncio
async def test_a_refused_command_sent_again_is_evaluated_anew_and_an_applied_one_is_not(
    test_policy: Settings, kafka: KafkaProbe
) -> None:
    """A refusal does not claim the command id: the same command sent again gets an answer
    again, and once the ticket exists it is applied, once."""
    service = dispatch(test_policy)
    ticket = triaged(2, product_line="rr")
    async with running(service):
        ghost = await send_command(kafka, "REQ-2026-999999", "add_note", "r1", note="x")
        # sent again once answered (a repeat within one batch is one delivery, answered once)
        await kafka.await_records(REJECTED, lambda r: data(r)["command_id"] == ghost)
        await send_command(kafka, "REQ-2026-999999", "add_note", "r1", note="x", command_id=ghost)
        early = await send_command(kafka, ticket.number, "add_note", "r1", note="first look")
        await kafka.await_records(REJECTED, lambda r: data(r)["command_id"] == early)
        await send_triaged(kafka, ticket)
        await kafka.await_records(EVENTS, kind("assigned"))
        again = {"note": "first look", "command_id": early}
        await send_command(kafka, ticket.number, "add_note", "r1", **again)  # now it exists
        await kafka.await_records(EVENTS, kind("note_added"))
        await send_command(kafka, ticket.number, "add_note", "r1", **again)  # applied already
        await send_command(kafka, ticket.number, "add_note", "r1", note="second look")
        await kafka.await_records(EVENTS, kind("note_added"), count=2)
        everything = await kafka.all_records(EVENTS, settle=1.0)
        rejected = await kafka.all_records(REJECTED, settle=0.5)
    notes = [data(r)["note"] for r in everything if kind("note_added")(r)]
    assert notes == ["first look", "second look"]
    answers = [(data(r)["command_id"], data(r)["reason"]) for r in rejected]
    assert sorted(answers) == sorted(
        [(ghost, "unknown_ticket"), (ghost, "unknown_ticket"), (early, "unknown_ticket")]
    )


@pytest.mark.asyncio
async def test_a_refused_command_redelivered_after_a_crash_is_not_applied_later(
    test_policy: Settings, kafka: KafkaProbe
) -> None:
    """A refusal releases the command's id (sent again, it is evaluated anew), but the record
    itself was answered: redelivered after a crash between dispatch's commit and its offsets',
    once the ticket has moved on, it must neither be refused again nor be applied after the
    agent was told it was refused."""
    async with running(dispatch(test_policy)) as service:
        [group] = [c.group_id for c in service.consumers if test_policy.topic(COMMANDS) in c.topics]
        await send_triaged(kafka, triaged(3, product_line="rr"))
        [assigned] = await kafka.await_records(EVENTS, kind("assigned"))
        number, agent = data(assigned)["number"], data(assigned)["agent_id"]
        early = await send_command(kafka, number, "start_work", agent)  # not accepted yet
        [refused] = await kafka.await_records(REJECTED, lambda r: True)
        await send_command(kafka, number, "accept", agent)
        await kafka.await_records(EVENTS, kind("accepted"))
    [record] = [r for r in await kafka.all_records(COMMANDS) if early in r.value.decode()]
    await rewind_group(test_policy, group, record.topic, record.partition, record.offset)

    async with running(dispatch(test_policy)):
        await send_command(kafka, number, "add_note", agent, note="after the restart")
        await kafka.await_records(EVENTS, kind("note_added"))
        events = await kafka.all_records(EVENTS, settle=0.5)
        rejected = await kafka.all_records(REJECTED, settle=0.5)
    assert (data(refused)["command_id"], data(refused)["reason"]) == (early, "illegal_transition")
    assert [e for e in events if kind("work_started")(e)] == [], "refused, so never applied"
    assert [data(r)["command_id"] for r in rejected] == [early], "and refused once"


@pytest.mark.asyncio
async def test_a_copy_of_a_refused_signed_command_at_a_new_offset_is_not_a_second_try(
    test_policy: Settings, kafka: KafkaProbe
) -> None:
    """A refused command leaves its id free for the sender's next try, but not for anyone who
    can write the topic: the same signed record copied later — once the ticket has moved on so
    that it would now pass — is skipped, neither applied nor answered again. Signed anew (a new
    token or ``issued_at``), the same command id is still evaluated anew."""
    async with running(dispatch(test_policy)):
        await send_triaged(kafka, triaged(4, product_line="rr"))
        [assigned] = await kafka.await_records(EVENTS, kind("assigned"))
        number, agent = data(assigned)["number"], data(assigned)["agent_id"]
        early = await send_command(kafka, number, "start_work", agent)  # not accepted yet
        await kafka.await_records(REJECTED, lambda r: data(r)["command_id"] == early)
        await send_command(kafka, number, "accept", agent)
        await kafka.await_records(EVENTS, kind("accepted"))
        [record] = [r for r in await kafka.all_records(COMMANDS) if early in r.value.decode()]
        await kafka.publish(COMMANDS, record.value, key=record.key, headers=list(record.headers))
        await send_command(kafka, number, "add_note", agent, note="after the copy")
        await kafka.await_records(EVENTS, kind("note_added"))
        copied = await kafka.all_records(EVENTS, settle=0.5)
        assert [e for e in copied if kind("work_started")(e)] == [], "the copy is no try"
        await send_command(kafka, number, "start_work", agent, command_id=early)  # signed anew
        await kafka.await_records(EVENTS, kind("work_started"))
        rejected = await kafka.all_records(REJECTED, settle=0.5)
    assert [data(r)["command_id"] for r in rejected] == [early], "answered once"


@pytest.mark.asyncio
async def test_sla_escalations_never_move_a_major_complaint_down_from_its_director(
    test_policy: Settings, kafka: KafkaProbe
) -> None:
    service = dispatch(test_policy)
    ticket = triaged(3, category="complaint", complaint=True, complaint_severity="major")
    async with running(service):
        await send_triaged(kafka, ticket)
        [assigned] = await kafka.await_records(EVENTS, kind("assigned"))
        for level in (2, 3):
            raised = escalation(ticket.ticket_id, ticket.number, level, "complaint_first_contact")
            await publish_event(
                kafka, "sla.events", raised, stream_id=raised.clock_id, subject=ticket.ticket_id
            )
        escalated = await kafka.await_records(EVENTS, kind("escalated"), count=2)
        everything = await kafka.all_records(EVENTS, settle=1.0)
        row = await service.pool.fetchrow(
            "SELECT group_id, agent_id, escalation_level FROM tickets WHERE number = $1",
            ticket.number,
        )
    assert (data(assigned)["group_id"], data(assigned)["agent_id"]) == ("directors", "dir")
    assert [(data(r)["level"], data(r)["to_group"]) for r in escalated] == [(2, None), (3, None)]
    moves = [r for r in everything if kind("assigned")(r) or kind("reassigned")(r)]
    assert moves == [assigned]
    assert row is not None
    assert tuple(row) == ("directors", "dir", 3)


@pytest.mark.asyncio
async def test_rebuilt_read_models_equal_the_live_ones(
    test_policy: Settings, kafka: KafkaProbe
) -> None:
    service = dispatch(test_policy)
    async with running(service):
        for n in range(12):
            await send_triaged(kafka, triaged(n, product_line=("rr", "tiny", "ll")[n % 3]))
        await kafka.await_records(
            EVENTS,
            lambda r: (
                r.header("ce_type")
                in ("servicedesk.ticket.assigned.v1", "servicedesk.ticket.queued.v1")
            ),
            count=12,
        )
        [first] = [
            data(r)
            for r in await kafka.await_records(EVENTS, kind("assigned"))
            if data(r)["number"] == "REQ-2026-000000"
        ]
        for step, fields in (("accept", {}), ("start_work", {}), ("resolve", {"resolution": "ok"})):
            await send_command(kafka, "REQ-2026-000000", step, first["agent_id"], **fields)
        await kafka.command(
            AGENTS,
            {"command_id": "off", "type": "go_off_shift", "agent_id": "l2", "actor": "l2"},
            key="l2",
        )
        await kafka.await_records(EVENTS, kind("resolved"))
        await kafka.await_records(
            EVENTS, lambda r: r.header("ce_type") == "servicedesk.agent.shift_ended.v1"
        )
        live = await snapshot(service)
        async with service.pool.acquire() as conn:
            for projection in service.projections:
                await rebuild(conn, service.store, projection)
        assert await snapshot(service) == live
        assert live["tickets"], "something to compare"


async def snapshot(service: Service) -> dict[str, list[dict[str, Any]]]:
    tables = {"tickets": "ticket_id", "agents": "agent_id", "group_cursors": "group_id"}
    out = {}
    for table, key in tables.items():
        rows = await service.pool.fetch(f"SELECT * FROM {table} ORDER BY {key}")
        out[table] = [{k: v for k, v in dict(r).items() if k != "updated_at"} for r in rows]
    return out

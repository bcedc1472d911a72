"""A reply to a closed ticket, or to one resolved longer ago than the reopen window, opens a new
ticket linked to it, through intake and dispatch on the real broker and PostgreSQL; both
timelines show the link."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from uuid import uuid4

import pytest
import yaml

from services import service_migrations
from services.cli.tickets import timeline
from services.dispatch.app import build as dispatch
from services.intake.app import build as intake
from services.intake.follow_ups import Asked, _one_follow_up_each
from services.intake.queries import ticket_id as find_ticket
from services.intake.storage import newest_follow_ups
from shared.database import connect
from shared.deadletter import Record
from shared.keystore import KeyStore, MasterKey
from shared.migrations import migrate
from shared.settings import Settings
from tests.intake.requests import RECEIVED_AT, encode, intake_clock, valid
from tests.support.credentials import token
from tests.support.kafka import KafkaProbe
from tests.support.migrations import schema_before
from tests.support.personal import opened as revealed
from tests.support.policies import shipped
from tests.support.services import running
from tests.support.time import DrivenTime
from tests.support.waiting import eventually

INTAKE, DISPATCH = "intake.events", "dispatch.events"


def data(record: Record) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(record.value)["data"]
    return value


def of_type(name: str) -> Any:
    return lambda r: r.header("ce_type") == f"servicedesk.ticket.{name}.v1"


@pytest.mark.asyncio
async def test_a_reply_to_a_closed_ticket_opens_a_linked_follow_up(
    settings: Settings, kafka: KafkaProbe
) -> None:
    received = await intake_clock(settings)  # the requests were received on a fixed day
    async with running(intake(received)), running(dispatch(settings)):
        await kafka.publish("requests.incoming", encode(valid("first")))
        [assigned] = await kafka.await_records(DISPATCH, of_type("assigned"))
        number, owner = data(assigned)["number"], data(assigned)["agent_id"]
        for kind, fields in [
            ("accept", {}),
            ("resolve", {"resolution": "new drum"}),
            ("close", {}),
        ]:
            await kafka.ticket_command(owner, number, kind, **fields)
        await kafka.await_records(DISPATCH, of_type("closed"))
        reply = valid(
            "again", reply_to_ticket=number, subject="Re: 打印机卡纸", description="又卡纸了。"
        )
        await kafka.publish("requests.incoming", encode(reply))
        [asked] = await kafka.await_records(DISPATCH, of_type("follow_up_requested"))
        [opened] = await kafka.await_records(INTAKE, of_type("follow_up_opened"))
        receipts = await kafka.await_records(INTAKE, of_type("received"), count=2)
        follow_up = data(opened)["follow_up_number"]
        [back] = await kafka.await_records(
            DISPATCH, lambda r: of_type("assigned")(r) and data(r)["number"] == follow_up
        )
        # The customer answers the old ticket's mail again: the follow-up has the reply.
        again_reply = valid("once-more", reply_to_ticket=number, description="还是卡纸。")
        await kafka.publish("requests.incoming", encode(again_reply))
        [onward] = await kafka.await_records(
            INTAKE, lambda r: of_type("customer_replied")(r) and data(r)["number"] == follow_up
        )
        conn = await connect(settings.require_database_url())
        try:
            old_id, new_id = await find_ticket(conn, number), await find_ticket(conn, follow_up)
            assert old_id is not None and new_id is not None
            keys = KeyStore(MasterKey.from_settings(settings))
            old_said = [e.summary() for e in await timeline(conn, old_id, keys)]
            new_said = [e.summary() for e in await timeline(conn, new_id, keys)]

            # dispatch's events replayed after intake's claims were purged (processed_retention):
            # the request comes again, and is answered by the follow-up it already has.
            await conn.execute("DELETE FROM intake.processed_messages")
            asked_id = json.loads(asked.value)["id"]
            headers = list(asked.headers)
            await kafka.publish(DISPATCH, asked.value, key=asked.key, headers=headers)
            claimed = "SELECT count(*) FROM intake.processed_messages WHERE message_id = $1"
            await eventually(lambda: conn.fetchval(claimed, asked_id), lambda n: n == 1)
            again = await conn.fetchval(
                "SELECT count(*) FROM intake.tickets WHERE channel_message_id = $1",
                data(asked)["channel_message_id"],
            )
            dead = await conn.fetchval("SELECT count(*) FROM intake.dead_letters")
        finally:
            await conn.close()
    assert (again, dead) == (1, 0), "one follow-up of the reply, and nothing dead-lettered"
    assert (await revealed(settings, data(onward)))["body"] == "还是卡纸。"
    settled = await kafka.all_records(DISPATCH, settle=0.5)
    asked_for = {json.loads(r.value)["id"] for r in settled if of_type("follow_up_requested")(r)}
    assert asked_for == {asked_id}, "no second follow-up (the first was published twice above)"
    assert data(asked)["reason"] == "closed"
    assert data(back)["agent_id"] == owner, "back with the agent who had the old ticket"
    assert data(back)["reason"].startswith(f"follows up {number}, back to its agent;"), data(back)
    assert (await revealed(settings, data(asked)))["body"] == "又卡纸了。"
    [receipt] = [
        await revealed(settings, data(r)) for r in receipts if data(r)["number"] == follow_up
    ]
    assert receipt["follows_up"] == number
    assert (receipt["subject"], receipt["description"]) == ("Re: 打印机卡纸", "又卡纸了。")
    assert receipt["customer"]["email"] == "wang.fang@example.com", "the old ticket's customer"
    assert any(f"follow-up {follow_up} opened" in line for line in old_said), old_said
    assert any(f"follows up {number}" in line for line in new_said), new_said
    assert not any(of_type("reopened")(r) for r in await kafka.all_records(DISPATCH, settle=0.5))


@pytest.mark.asyncio
async def test_two_quick_replies_to_a_closed_ticket_open_one_follow_up_holding_both(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """The customer writes twice before the first follow-up is opened: both replies land on the
    closed ticket, dispatch asks twice, and intake opens one follow-up and records the other
    reply on it — not a second ticket for one problem."""
    received = await intake_clock(settings)
    async with running(intake(received)), running(dispatch(settings)):
        await kafka.publish("requests.incoming", encode(valid("first")))
        [assigned] = await kafka.await_records(DISPATCH, of_type("assigned"))
        number, owner = data(assigned)["number"], data(assigned)["agent_id"]
        for kind, fields in [("accept", {}), ("resolve", {"resolution": "x"}), ("close", {})]:
            await kafka.ticket_command(owner, number, kind, **fields)
        await kafka.await_records(DISPATCH, of_type("closed"))
        for name, text in [("again-1", "又卡纸了。"), ("again-2", "补充：型号 M404。")]:
            reply = valid(name, reply_to_ticket=number, subject="Re: 打印机卡纸", description=text)
            await kafka.publish("requests.incoming", encode(reply))
        asked = await kafka.await_records(DISPATCH, of_type("follow_up_requested"), count=2)
        [opened] = await kafka.await_records(INTAKE, of_type("follow_up_opened"))
        follow_up = data(opened)["follow_up_number"]
        [onward] = await kafka.await_records(
            INTAKE, lambda r: of_type("customer_replied")(r) and data(r)["number"] == follow_up
        )
        # Both requests replayed after intake's claims were purged: nothing is recorded twice.
        conn = await connect(settings.require_database_url())
        try:
            await conn.execute("DELETE FROM intake.processed_messages")
            for record in asked:
                headers = list(record.headers)
                await kafka.publish(DISPATCH, record.value, key=record.key, headers=headers)
            ids = [json.loads(r.value)["id"] for r in asked]
            claimed = "SELECT count(*) FROM intake.processed_messages WHERE message_id = ANY($1)"
            await eventually(lambda: conn.fetchval(claimed, ids), lambda n: n == 2)
        finally:
            await conn.close()
        settled = await kafka.all_records(INTAKE, settle=1.0)
    assert [data(r)["number"] for r in settled if of_type("customer_replied")(r)].count(
        follow_up
    ) == 1, "the second reply recorded once on the follow-up"
    receipts = [r for r in settled if of_type("received")(r)]
    assert len(receipts) == 2, "the ticket and one follow-up"
    assert [data(r)["follow_up_number"] for r in settled if of_type("follow_up_opened")(r)] == [
        follow_up
    ]
    [receipt] = [
        await revealed(settings, data(r)) for r in receipts if data(r)["number"] == follow_up
    ]
    bodies = {receipt["description"], (await revealed(settings, data(onward)))["body"]}
    assert bodies == {"又卡纸了。", "补充：型号 M404。"}, "the follow-up holds both replies"
    assert data(onward)["channel_message_id"] != receipt["channel_message_id"]


def test_one_follow_up_a_ticket_whether_opened_before_or_in_the_same_batch() -> None:
    def ask(number: str) -> Asked:
        return Asked(cast(Any, None), cast(Any, SimpleNamespace(number=number)), cast(Any, None))

    made = [ask("A"), ask("B"), ask("A"), ask("C"), ask("C"), ask("A")]
    to_open, onward = _one_follow_up_each(made, {"C": "F-C"})
    assert to_open == [made[0], made[1]], "A and B opened once each; C has one already"
    assert onward == [(made[2], 0), (made[3], "F-C"), (made[4], "F-C"), (made[5], 0)]


@pytest.mark.asyncio
async def test_a_reply_after_the_reopen_window_opens_a_linked_follow_up_not_a_reopening(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """intake's and dispatch's clocks are driven: the ticket is resolved, then eight days pass
    (the shipped window is seven) before the customer writes again. Nobody closes it meanwhile
    (``close_after: null``): closed, it would be followed up for that reason instead."""
    document = shipped()
    document["routing"]["close_after"] = None
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(document, allow_unicode=True))
    driven = settings.replace(clock="driven", policy_file=policy)
    clock = DrivenTime(driven, "intake", "dispatch")
    start = datetime.fromisoformat(RECEIVED_AT) + timedelta(minutes=1)
    await clock.set(start)
    async with running(intake(driven)), running(dispatch(driven)):
        await kafka.publish("requests.incoming", encode(valid("first")))
        [assigned] = await kafka.await_records(DISPATCH, of_type("assigned"))
        number, owner = data(assigned)["number"], data(assigned)["agent_id"]
        then = token(driven, owner, now=start)  # dispatch checks it against its driven clock
        await kafka.ticket_command(owner, number, "accept", token=then)
        await kafka.ticket_command(owner, number, "resolve", token=then, resolution="new drum")
        await kafka.await_records(DISPATCH, of_type("resolved"))

        later = start + timedelta(days=8)
        await clock.set(later)
        reply = valid(
            "eight-days-on",
            reply_to_ticket=number,
            received_at=later.isoformat(),
            subject=f"Re: Your request [{number}] is resolved",  # the desk's own notice's
            description="又卡纸了。",
        )
        await kafka.publish("requests.incoming", encode(reply))
        [asked] = await kafka.await_records(DISPATCH, of_type("follow_up_requested"))
        [opened] = await kafka.await_records(INTAKE, of_type("follow_up_opened"))
        follow_up = data(opened)["follow_up_number"]
        receipts = await kafka.await_records(INTAKE, of_type("received"), count=2)
        await kafka.await_records(
            DISPATCH, lambda r: of_type("assigned")(r) and data(r)["number"] == follow_up
        )
        after = await kafka.all_records(DISPATCH, settle=0.5)

    assert data(asked)["reason"] == "reopen_window_passed"
    assert (await revealed(settings, data(asked)))["body"] == "又卡纸了。"
    [receipt] = [
        await revealed(settings, data(r)) for r in receipts if data(r)["number"] == follow_up
    ]
    assert receipt["follows_up"] == number
    assert receipt["subject"] == "打印机卡纸", "the old ticket's, not the notice's"
    assert datetime.fromisoformat(receipt["received_at"]) == later
    assert not any(of_type("reopened")(r) for r in after), "the old ticket stays resolved"


async def _ticket_row(conn: Any, number: str, followed_up_by: str | None = None) -> str:
    ticket_id = str(uuid4())
    await conn.execute(
        "INSERT INTO tickets (ticket_id, number, channel, channel_message_id, received_at, "
        "recorded_at, customer_name, language, subject, followed_up_by) "
        "VALUES ($1, $2, 'email', $2, now(), now(), 'x', 'zh', 's', $3)",
        ticket_id,
        number,
        followed_up_by,
    )
    return ticket_id


@pytest.mark.asyncio
async def test_the_newest_follow_up_is_found_along_a_chain_of_follow_ups(
    settings: Settings,
) -> None:
    conn = await connect(settings.require_database_url(), schema="intake")
    try:
        await migrate(conn, "intake", service_migrations("intake"))
        await _ticket_row(conn, "A", "B")
        await _ticket_row(conn, "B", "C")
        await _ticket_row(conn, "C")
        await _ticket_row(conn, "D")
        newest = await newest_follow_ups(conn, ["A", "B", "C", "D", "unknown"])
    finally:
        await conn.close()
    assert newest == {"A": "C", "B": "C"}, "only tickets that were followed up, to the chain's end"


@pytest.mark.asyncio
async def test_follow_ups_opened_before_the_index_kept_them_are_carried_over(
    settings: Settings,
) -> None:
    async with schema_before(settings, "intake", 4) as (conn, finish):
        old = await conn.fetchval(
            "INSERT INTO tickets (ticket_id, number, channel, channel_message_id, received_at, "
            "recorded_at, customer_name, language, subject) VALUES (gen_random_uuid(), 'OLD', "
            "'email', 'm', now(), now(), 'x', 'zh', 's') RETURNING ticket_id::text"
        )
        for version, follow_up in enumerate(("F1", "F2"), start=1):
            envelope = {"data": {"ticket_id": old, "follow_up_number": follow_up}}
            await conn.execute(
                "INSERT INTO events (event_id, stream_id, stream_version, type, subject, "
                "occurred_at, correlation_id, envelope) VALUES (gen_random_uuid(), $1, $2, "
                "'servicedesk.ticket.follow_up_opened.v1', $3, now(), 'c', $4::json)",
                f"ticket-{old}",
                version,
                old,
                json.dumps(envelope),
            )
        await finish()
        newest = await conn.fetchval("SELECT followed_up_by FROM tickets WHERE number = 'OLD'")
    assert newest == "F2"

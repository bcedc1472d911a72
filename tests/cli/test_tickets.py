"""`desk ticket show`: one ticket's story across services, in order; `desk ticket flag`, ...:
the exceptions path's commands, signed with the person's token."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import pytest

from services.cli.tickets import timeline
from services.dispatch.app import build as dispatch
from services.intake.app import build as intake
from services.intake.queries import ticket_id as find_ticket
from shared.credentials import authenticate_command
from shared.database import connect
from shared.keys import KeyRing
from shared.keystore import KeyStore, MasterKey
from shared.settings import Settings
from tests.cli.support import DESK, desk
from tests.intake.requests import encode, intake_clock, valid
from tests.support.credentials import token
from tests.support.kafka import KafkaProbe
from tests.support.services import running


@pytest.mark.asyncio
async def test_the_timeline_spans_intake_and_dispatch_in_order(
    settings: Settings, kafka: KafkaProbe
) -> None:
    settings = await intake_clock(settings)
    async with running(intake(settings)), running(dispatch(settings)):
        await kafka.publish("requests.incoming", encode(valid("story-1")))
        [assigned] = await kafka.await_records(
            "dispatch.events", lambda r: r.header("ce_type") == "servicedesk.ticket.assigned.v1"
        )
        number = json.loads(assigned.value)["data"]["number"]
        agent = json.loads(assigned.value)["data"]["agent_id"]
        for kind, extra in (("accept", {}), ("respond", {"message": "我们马上处理"})):
            await kafka.command(
                "tickets.commands",
                {
                    "command_id": f"c-{kind}",
                    "type": kind,
                    "ticket_number": number,
                    "actor": agent,
                    **extra,
                },
                key=number,
            )
        await kafka.await_records(
            "dispatch.events", lambda r: r.header("ce_type") == "servicedesk.ticket.responded.v1"
        )
        conn = await connect(settings.require_database_url())
        try:
            ticket_id = await find_ticket(conn, number)
            assert ticket_id is not None
            entries = await timeline(conn, ticket_id, KeyStore(MasterKey.from_settings(settings)))
        finally:
            await conn.close()

        env = {**os.environ, **settings.environment()}
        shown = await asyncio.to_thread(
            subprocess.run,
            [DESK, "ticket", "show", number],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        missing = await asyncio.to_thread(
            subprocess.run,
            [DESK, "ticket", "show", "REQ-1999-000001"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    assert [e.what for e in entries] == [
        "ticket.received",
        "ticket.triaged",
        "ticket.classified",
        "ticket.assigned",
        "ticket.accepted",
        "ticket.responded",
    ]
    assert [e.service for e in entries] == ["intake"] * 2 + ["dispatch"] * 4
    assert "rule hardware-fault" in entries[1].summary()
    assert "policy sha256:" in entries[2].summary()
    assert f"assigned to {agent}" in entries[3].summary()
    assert "first response" in entries[5].summary()
    assert entries[2].causation_id == entries[1].event_id, "classified was caused by triaged"
    assert shown.returncode == 0, shown.stderr
    assert number in shown.stdout and "first response" in shown.stdout
    assert missing.returncode == 1 and "no ticket numbered" in missing.stdout


@pytest.mark.asyncio
async def test_the_exceptions_commands_are_sent_signed_in_the_tokens_name(
    settings: Settings, kafka: KafkaProbe
) -> None:
    await kafka.create("tickets.commands")
    signed_by = token(settings, "li.na")
    sent = await desk(settings, "ticket", "ask-specialist", "req-2026-000007", "--group",
                       "network", "--question", "VPN down?", "--token", signed_by)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    refused = await desk(settings, "ticket", "respond", "REQ-2026-000007", "--token", signed_by)
    assert refused.returncode == 1
    assert "respond needs either message or template" in refused.stdout
    [record] = await kafka.await_records("tickets.commands", lambda r: True)
    credential = authenticate_command(KeyRing.from_settings(settings), record.headers, record.value)
    body = json.loads(record.value)
    assert credential.subject == "li.na"
    assert "actor" not in body, "the actor is the token's, never the payload's"
    assert (body["type"], body["ticket_number"], body["to_group"], body["question"]) == (
        "request_specialist", "REQ-2026-000007", "network", "VPN down?"
    )  # fmt: skip
    assert sent.stdout.strip() == f"request_specialist {body['command_id']} sent"
    assert len(await kafka.all_records("tickets.commands", settle=0.5)) == 1, "the refused one"


@pytest.mark.asyncio
async def test_what_a_customer_wrote_is_shown_as_written_never_as_markup(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """A name of ``[/]`` made `desk ticket show` fail, and ``[link=…]`` printed a live link in
    the operator's terminal: customers' text went to the table as rich markup."""
    settings = await intake_clock(settings)
    name, subject = "[/] x", "[link=http://evil.example]phish[/link] [blink]now[/blink]"
    async with running(intake(settings)):
        request = valid("markup-1", subject=subject)
        request["customer"] = {**request["customer"], "name": name}
        await kafka.publish("requests.incoming", encode(request))
        [received] = await kafka.await_records(
            "intake.events", lambda r: r.header("ce_type") == "servicedesk.ticket.received.v1"
        )
        number = json.loads(received.value)["data"]["number"]
        shown = await asyncio.to_thread(
            subprocess.run,
            [DESK, "ticket", "show", number],
            env={**os.environ, **settings.environment(), "COLUMNS": "400"},
            capture_output=True,
            text=True,
            check=False,
        )
    assert shown.returncode == 0, shown.stderr
    assert name in shown.stdout and subject in shown.stdout

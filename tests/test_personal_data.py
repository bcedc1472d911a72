"""Crypto-shredding end to end (issue 17): intake, dispatch, notify and the console running,
a known customer's request handled, and then erased.

Before erasure, no record servicedesk wrote on any topic (all but the adapters' own
``requests.incoming``; rejections and dead letters included) and no row of any event store holds
the customer's name, e-mail address, phone number, or what they or the agent wrote — yet opened
with the customers' keys they all are there, and ``desk customer export`` returns them. After
``desk customer erase`` nothing opens any more, the ticket's whole timeline is still told with
"erased" in their place, the console shows "erased", the SLA report is the same, and other
customers' requests flow.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services import build_service
from services.cli.tickets import timeline
from services.intake.queries import customer_data as held
from shared.database import connect
from shared.deadletter import Record
from shared.keystore import KeyStore, MasterKey
from shared.local.sinks import smtp_server
from shared.personal import keys_for
from shared.settings import Settings
from tests.console.support import desk
from tests.intake.requests import encode, valid
from tests.support.kafka import KafkaProbe
from tests.support.waiting import eventually

DESK = str(Path(sys.executable).parent / "desk")
CUSTOMER = {"name": "Zhang Wei", "email": "zhang.wei@example.com", "phone": "+8613912345678"}
SUBJECT = "Printer jams on floor 7"
DESCRIPTION = "The printer near room 7031 jams on every second page since Monday."
REPLY = "Please send the printer's asset tag"
RESOLUTION = "Replaced the fuser of the floor-7 printer"
FILE = "zhang-wei-lease-contract.pdf"
ATTACHMENT = {
    "name": FILE,
    "size": 10,
    "content_type": "application/pdf",
    "url": f"https://f/{FILE}",
}
CAUSE = "Zhang Wei's toner cartridge was a counterfeit"
"""A complaint's solution states its cause (and actions, compensation): what the agent wrote."""
PERSONAL = [
    *CUSTOMER.values(), "13912345678", SUBJECT, DESCRIPTION, REPLY, RESOLUTION, CAUSE, FILE,
]  # fmt: skip


RUNNING = ("intake", "dispatch", "sla", "notify", "console")


INPUTS = ("requests.incoming", "tickets.commands", "agents.commands")
"""What channel adapters and agent desks write (the console is one desk): their own input, in
clear as they send it. Everything servicedesk records from them is sealed."""


async def raw_records(settings: Settings) -> dict[str, list[Record]]:
    """Every record of every topic the running services write, but the inputs."""
    kafka_topics = {t for n in RUNNING for t in build_service(n, settings).topics()}
    wanted = sorted(t.removeprefix(settings.topic_prefix) for t in kafka_topics)
    probe = KafkaProbe(settings)
    try:
        return {t: await probe.records_so_far(t) for t in wanted if t not in INPUTS}
    finally:
        await probe.close()


def record_text(record: Record) -> str:
    parts = [record.value, record.key or b"", *(v for _, v in record.headers)]
    return b"\n".join(parts).decode("utf-8", "replace")


async def stored_rows(settings: Settings) -> list[str]:
    """Every row of every event store (the console's journal too), of every dead-letter table
    and of notify's notices and ticket facts, as text."""
    conn = await connect(settings.require_database_url())
    try:
        tables = [f"{n}.events" for n in RUNNING if n != "console"]
        tables += ["console.journal", "notify.deliveries", "notify.tickets"]
        tables += [f"{n}.dead_letters" for n in RUNNING]
        rows: list[str] = []
        for table in tables:
            for row in await conn.fetch(f"SELECT * FROM {table}"):
                rows.append(
                    " ".join(
                        bytes(v).decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                        for v in row.values()
                    )
                )
        return rows
    finally:
        await conn.close()


async def console_rows(settings: Settings) -> list[str]:
    """Every row of every table of the console's own (its read models: opened for the desk)."""
    conn = await connect(settings.require_database_url())
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'console'"
        )
        return [
            str(dict(row))
            for (table,) in tables
            for row in await conn.fetch(f'SELECT * FROM console."{table}"')
        ]
    finally:
        await conn.close()


async def opened_everything(settings: Settings, texts: list[str]) -> str:
    """The JSON texts given, with every sealed field opened by the keys as they are now."""
    documents: list[Any] = []
    for text in texts:
        start = text.find("{")
        try:
            documents.append(json.loads(text[start:]) if start >= 0 else None)
        except ValueError:
            documents.append(None)
    conn = await connect(settings.require_database_url())
    try:
        keys = await keys_for(KeyStore(MasterKey.from_settings(settings)), conn, documents)
    finally:
        await conn.close()
    return json.dumps([keys.reveal_json(d) for d in documents], ensure_ascii=False)


def desk_command(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DESK, *args],
        env={**os.environ, **settings.environment()},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


async def sla_report(settings: Settings) -> dict[str, Any]:
    """``desk sla report --json`` as of sla's driven clock (the same window each time)."""
    driven = settings.replace(clock="driven")
    shown = await asyncio.to_thread(desk_command, driven, "sla", "report", "--days", "30", "--json")
    assert shown.returncode == 0, shown.stderr
    report: dict[str, Any] = json.loads(shown.stdout)
    return report


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_customers_data_is_sealed_everywhere_exported_on_request_and_erased_for_good(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    with smtp_server() as smtp:
        await scenario(settings.replace(smtp_port=smtp.port))
        bodies = [m.get_payload(decode=True) for m in smtp.to(CUSTOMER["email"])]
    mails = "\n".join(b.decode() for b in bodies if isinstance(b, bytes))
    assert REPLY in mails and RESOLUTION in mails, "notify sent the customer the clear text"
    logs = "".join(capfd.readouterr())
    assert "service started" in logs, "the services logged what they did"
    assert not [p for p in PERSONAL if p in logs], "no log line names the customer"


async def scenario(settings: Settings) -> None:
    async with desk(settings, "sla", "notify") as world:
        await world.request(
            1,
            customer=CUSTOMER,
            subject=SUBJECT,
            description=DESCRIPTION,
            attachments=[ATTACHMENT],
        )
        refused = {**valid("bad-1", customer=CUSTOMER, description=DESCRIPTION), "extra": 1}
        await world.kafka.publish("requests.incoming", encode(refused), key="email:bad-1")
        [ticket] = await world.tickets("ops", 1, status=["assigned"])
        number, agent_id = ticket["number"], ticket["agent_id"]
        agent = world.client(agent_id)
        for body in (
            {"type": "accept"},
            {"type": "respond", "message": REPLY},
            {"type": "resolve", "resolution": RESOLUTION, "cause": CAUSE},
        ):
            sent = await agent.post(f"/api/tickets/{number}/commands", json=body)
            assert sent.status_code == 202, sent.text
            decided = await world.decided(agent, sent.json()["command_id"])
            assert decided["status"] == "accepted", decided
        operator = world.client("ops")

        async def detail() -> dict[str, Any]:
            found: dict[str, Any] = (await operator.get(f"/api/tickets/{number}")).json()
            return found

        shown = await eventually(
            detail, lambda d: d["status"] == "resolved", what="resolved in the console"
        )
        assert (shown["customer"]["email"], shown["description"]) == (
            CUSTOMER["email"],
            DESCRIPTION,
        ), "the console opens them for the people allowed to see the ticket"
        [solution] = [e for e in shown["timeline"] if e["kind"] == "ticket.resolved"]
        assert solution["said"] == f"{RESOLUTION}\ncause: {CAUSE}", solution
        # An agent desk's broken command, quoting what they wrote: its bytes are refused, sealed.
        broken = {"type": "respond", "ticket_number": number, "message": f"{REPLY} (draft)"}
        await world.kafka.publish("tickets.commands", json.dumps(broken).encode(), key=number)
        await world.kafka.await_records("tickets.commands.rejected", lambda r: True)
        await world.kafka.await_records("requests.rejected", lambda r: True)
        await world.kafka.await_records(
            "notify.events", lambda r: r.header("ce_type") == "servicedesk.notification.sent.v1"
        )

        # Nothing in clear: every topic's raw bytes, every stored event and dead letter.
        records = await raw_records(settings)
        assert records["intake.events"] and records["dispatch.events"]
        assert records["requests.rejected"] and records["notify.events"]
        assert records["tickets.commands.rejected"]
        texts = [record_text(r) for rs in records.values() for r in rs]
        rows = await stored_rows(settings)
        for text in [*texts, *rows]:
            leaked = [p for p in PERSONAL if p in text]
            assert not leaked, (leaked, text[:500])
        opened = await opened_everything(settings, [*texts, *rows])
        assert all(p in opened for p in PERSONAL), "each is there, sealed"

        # The access right: everything held, opened.
        conn = await connect(settings.require_database_url())
        try:
            keys = KeyStore(MasterKey.from_settings(settings))
            ref = await keys.find(conn, f"email:{CUSTOMER['email']}")
            assert ref is not None
            exported = json.dumps(
                await held(conn, keys, ref, RUNNING), ensure_ascii=False, default=str
            )
            ticket_id = shown["ticket_id"]
            before = await timeline(conn, ticket_id, keys)
        finally:
            await conn.close()
        for clear in (*CUSTOMER.values(), DESCRIPTION, REPLY, RESOLUTION):
            assert clear in exported
        assert "servicedesk.request.rejected.v1" in exported, "the refused request's bytes too"
        report = await sla_report(settings)
        met = {c["metric"]: c["met"] for c in report["compliance"]}
        assert met["first_response"] == 1 and report["mean_handling_s"], report
        await world.kafka.await_records(
            "notify.events",
            lambda r: (
                r.header("ce_type") == "servicedesk.notification.sent.v1"
                and b'"agent_reply"' in r.value
            ),
        )
        cli = await asyncio.to_thread(desk_command, settings, "customer", "export", ref)
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["customer"]["ref"] == ref
        assert DESCRIPTION in cli.stdout
        # The notices about them too: those they were sent, and the agents' quoting them.
        notices = json.loads(cli.stdout)["notices"]
        theirs = {n["template"]: n for n in notices if n["recipient"] == "customer"}
        assert theirs["agent_reply"]["body"] == REPLY, theirs
        assert {n["address"] for n in theirs.values()} == {CUSTOMER["email"]}
        agents = [n for n in notices if n["recipient"] != "customer"]
        assert agents and all(n["address"] is None for n in agents), "an agent's address is theirs"

        # Erasure: the key is destroyed; nothing opens; every view still works.
        erased = await asyncio.to_thread(desk_command, settings, "customer", "erase", ref)
        assert erased.returncode == 0, erased.stderr + erased.stdout
        again = await asyncio.to_thread(desk_command, settings, "customer", "erase", ref)
        assert again.returncode == 1, "erased once"
        await world.kafka.await_records(
            "intake.events", lambda r: r.header("ce_type") == "servicedesk.customer.erased.v1"
        )
        records = await raw_records(settings)
        texts = [record_text(r) for rs in records.values() for r in rs]
        opened = await opened_everything(settings, [*texts, *await stored_rows(settings)])
        assert not [p for p in PERSONAL if p in opened], "nothing decryptable remains"
        assert "erased" in opened

        conn = await connect(settings.require_database_url())
        try:
            after = await timeline(conn, ticket_id, keys)
        finally:
            await conn.close()
        assert [e.type for e in after] == [e.type for e in before], "the whole timeline"
        said = "\n".join(e.summary() for e in after)
        assert "from erased: 'erased'" in said and not [p for p in PERSONAL if p in said]
        shown = await eventually(
            detail, lambda d: d["description"] == "erased", what="erased in the console"
        )
        assert shown["customer"]["name"] == "erased" and shown["subject"] == "erased"
        assert all(e["said"] in (None, "erased") for e in shown["timeline"])
        kept = await console_rows(settings)
        assert not [(p, r[:300]) for r in kept for p in PERSONAL if p in r], (
            "the console's read models keep nothing of theirs in clear"
        )
        shell = await asyncio.to_thread(desk_command, settings, "ticket", "show", number)
        assert shell.returncode == 0 and "erased" in shell.stdout, shell.stderr
        assert await sla_report(settings) == report, "the SLA report is the same"

        # Other customers' requests flow; the erased one writing again is a new subject.
        other = {"name": "Li Na", "email": "li.na.customer@example.com"}
        await world.request(2, customer=other, subject="Invoice copy", description="Please")
        await world.request(3, customer=CUSTOMER, subject="Again", description="Me again")
        await world.tickets("ops", 3)
        conn = await connect(settings.require_database_url())
        try:
            renewed = await keys.find(conn, f"email:{CUSTOMER['email']}")
        finally:
            await conn.close()
        assert renewed is not None and renewed != ref

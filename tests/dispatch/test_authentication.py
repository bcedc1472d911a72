"""Forged commands, on a real broker and PostgreSQL: each is refused with its reason and the ticket
is left exactly as it was; the genuine command goes through, once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.dispatch.app import build as dispatch
from shared.credentials import issue_token, sign_command
from shared.keys import KeyRing
from shared.service import Service
from shared.settings import Settings
from tests.dispatch.support import POLICY_FILE, triaged
from tests.dispatch.test_dispatch import COMMANDS, EVENTS, REJECTED, data, kind, send_triaged
from tests.support.credentials import token
from tests.support.kafka import KafkaProbe
from tests.support.services import running

AGENT_REJECTED = "agents.commands.rejected"


@dataclass
class Forgery:
    """One forged record: where it goes, its value and headers."""

    topic: str
    value: bytes
    headers: list[tuple[str, bytes]]
    key: str


def body(number: str, kind_: str, **fields: Any) -> dict[str, Any]:
    return {"command_id": str(uuid.uuid4()), "type": kind_, "ticket_number": number, **fields}


def signed(topic: str, value: dict[str, Any], token_: str, key: str) -> Forgery:
    raw = json.dumps(value).encode()
    return Forgery(topic, raw, sign_command(token_, raw), key)


Make = Callable[[Settings, str, str], Forgery]
"""(settings, ticket number, its assignee) -> the forged record."""


def no_credential(settings: Settings, number: str, agent: str) -> Forgery:
    return Forgery(COMMANDS, json.dumps(body(number, "accept", actor=agent)).encode(), [], number)


def expired(settings: Settings, number: str, agent: str) -> Forgery:
    old = token(settings, agent, now=datetime.now(UTC) - timedelta(hours=2), ttl=timedelta(hours=1))
    return signed(COMMANDS, body(number, "accept"), old, number)


def unknown_key(settings: Settings, number: str, agent: str) -> Forgery:
    [stranger] = KeyRing.generate({"desk": ["agents"]})  # the right issuer's name, not its key
    forged = issue_token(stranger, agent, now=datetime.now(UTC), ttl=timedelta(hours=1))
    return signed(COMMANDS, body(number, "accept"), forged, number)


def signed_for_another_actor(settings: Settings, number: str, agent: str) -> Forgery:
    # mallory holds a real token of her own and claims to be the assignee in the payload
    return signed(COMMANDS, body(number, "accept", actor=agent), token(settings, "f2"), number)


def replayed_with_a_new_command_id(settings: Settings, number: str, agent: str) -> Forgery:
    genuine = signed(COMMANDS, body(number, "accept"), token(settings, agent), number)
    changed = json.loads(genuine.value) | {"command_id": str(uuid.uuid4())}
    return Forgery(COMMANDS, json.dumps(changed).encode(), genuine.headers, number)


def customer_token_of_another_ticket(settings: Settings, number: str, agent: str) -> Forgery:
    theirs = token(settings, "customer", ticket="REQ-2026-000777")
    return signed(COMMANDS, body(number, "reopen", reason="not fixed"), theirs, number)


def agent_acting_as_supervisor(settings: Settings, number: str, agent: str) -> Forgery:
    # the assignee moves the ticket to another group: only a supervisor of its group may
    value = body(number, "reassign", to_group="tiny", reason="not mine")
    return signed(COMMANDS, value, token(settings, agent), number)


def reclassify(number: str) -> dict[str, Any]:
    return body(number, "reclassify", complexity="complex", reason="needs an expert")


def a_colleague_reclassifying(settings: Settings, number: str, agent: str) -> Forgery:
    # correcting triage is for the assignee or a supervisor of the ticket's group
    return signed(COMMANDS, reclassify(number), token(settings, "f2"), number)


def another_groups_supervisor_reclassifying(settings: Settings, number: str, agent: str) -> Forgery:
    # dir supervises the directors, not the front line that holds the ticket
    return signed(COMMANDS, reclassify(number), token(settings, "dir"), number)


def a_customer_token_reclassifying(settings: Settings, number: str, agent: str) -> Forgery:
    # even a customer token that lists reclassify, for this very ticket
    customer = token(settings, "customer", ticket=number, commands=("reclassify",))
    return signed(COMMANDS, reclassify(number), customer, number)


def system_from_the_operators_key(settings: Settings, number: str, agent: str) -> Forgery:
    ring = KeyRing.from_settings(settings)
    operators = ring.issuer_of("agents")
    assert operators is not None
    # PyJWT signs anything; the check is dispatch's: the operators' key may not vouch for system
    claims = {"iss": operators.issuer, "sub": "system", "aud": "servicedesk", "jti": "x"}
    now = int(datetime.now(UTC).timestamp())
    import jwt

    forged = jwt.encode(
        {**claims, "iat": now, "exp": now + 600},
        operators.secret,
        algorithm="HS256",
        headers={"kid": operators.kid},
    )
    return signed(COMMANDS, body(number, "close"), forged, number)


def customer_token_on_agent_commands(settings: Settings, number: str, agent: str) -> Forgery:
    customer = token(settings, "customer", ticket=number)
    value = {"command_id": str(uuid.uuid4()), "type": "go_off_shift", "agent_id": agent}
    return signed("agents.commands", value, customer, agent)


def a_channel_clients_token(settings: Settings, number: str, agent: str) -> Forgery:
    # a web form's token posts customers' requests to the console; it acts on no ticket
    return signed(COMMANDS, body(number, "close"), token(settings, "channel:webform"), number)


def another_agents_shift(settings: Settings, number: str, agent: str) -> Forgery:
    value = {"command_id": str(uuid.uuid4()), "type": "go_off_shift", "agent_id": agent}
    return signed("agents.commands", value, token(settings, "f2"), agent)


CASES: list[tuple[str, Make, str]] = [
    ("no credential", no_credential, "unauthenticated"),
    ("an expired token", expired, "unauthenticated"),
    ("signed by an unknown key", unknown_key, "unauthenticated"),
    ("signed for another actor", signed_for_another_actor, "unauthenticated"),
    ("replayed with a new command id", replayed_with_a_new_command_id, "unauthenticated"),
    ("a customer token used on another ticket", customer_token_of_another_ticket, "not_permitted"),
    ("an agent acting as supervisor", agent_acting_as_supervisor, "not_permitted"),
    ("a colleague reclassifying", a_colleague_reclassifying, "not_permitted"),
    (
        "another group's supervisor reclassifying",
        another_groups_supervisor_reclassifying,
        "not_permitted",
    ),
    ("a customer token reclassifying", a_customer_token_reclassifying, "not_permitted"),
    ("system from the operators' key", system_from_the_operators_key, "unauthenticated"),
    ("a customer token on agents.commands", customer_token_on_agent_commands, "not_permitted"),
    ("an agent changing another agent's shift", another_agents_shift, "not_permitted"),
    ("a channel client's token", a_channel_clients_token, "not_permitted"),
]


async def ticket_state(service: Service, number: str) -> tuple[str, int, str | None]:
    row = await service.pool.fetchrow(
        "SELECT status, version, agent_id FROM tickets WHERE number = $1", number
    )
    assert row is not None
    return row["status"], row["version"], row["agent_id"]


@pytest.mark.asyncio
async def test_forged_commands_are_refused_and_change_nothing(
    settings: Settings, kafka: KafkaProbe
) -> None:
    service = dispatch(settings.replace(policy_file=POLICY_FILE))
    async with running(service):
        # Ticket 1 goes to the front line, to f1 (f2 is its colleague).
        await send_triaged(kafka, triaged(1, complexity="simple", category="inquiry"))
        [assigned] = await kafka.await_records(EVENTS, kind("assigned"))
        number, agent = data(assigned)["number"], data(assigned)["agent_id"]
        assert agent == "f1"
        before = await ticket_state(service, number)
        events_before = await service.pool.fetchval("SELECT count(*) FROM events")

        forged = {name: make(settings, number, agent) for name, make, _ in CASES}
        for record in forged.values():
            await kafka.publish(record.topic, record.value, key=record.key, headers=record.headers)
        expected = {json.loads(f.value)["command_id"]: reason for f, (_, _, reason) in
                    zip(forged.values(), CASES, strict=True)}  # fmt: skip
        on_agents = sum(1 for f in forged.values() if f.topic == "agents.commands")
        refused = [
            *await kafka.await_records(REJECTED, lambda r: True, count=len(CASES) - on_agents),
            *await kafka.await_records(AGENT_REJECTED, lambda r: True, count=on_agents),
        ]
        assert await ticket_state(service, number) == before, "a forged command changed it"
        stored = await service.pool.fetch("SELECT type FROM events ORDER BY position")
        new_types = [r["type"] for r in stored[events_before:]]
        assert set(new_types) <= {
            "servicedesk.ticket_command.rejected.v1",
            "servicedesk.agent_command.rejected.v1",
        }, new_types

        # The genuine command goes through; the very same record sent again is one command.
        genuine = signed(COMMANDS, body(number, "accept"), token(settings, agent), number)
        for _ in range(2):
            await kafka.publish(COMMANDS, genuine.value, key=number, headers=genuine.headers)
        [accepted] = await kafka.await_records(EVENTS, kind("accepted"))
        await kafka.all_records(COMMANDS)
        after = await ticket_state(service, number)
    by_id = {data(r)["command_id"]: data(r) for r in refused}
    assert {cid: r["reason"] for cid, r in by_id.items()} == expected
    for name, record in forged.items():
        rejection = by_id[json.loads(record.value)["command_id"]]
        assert rejection["detail"], name
        if rejection["reason"] == "unauthenticated":
            assert rejection["actor"] is None, f"{name}: no actor was established"
    assert data(accepted)["agent_id"] == agent
    assert after == ("accepted", before[1] + 1, agent)
    assert len(await kafka.await_records(EVENTS, kind("accepted"))) == 1

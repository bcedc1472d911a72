"""A forged `sla.escalated` (real broker and PostgreSQL): whoever publishes it to `sla.events`
other than sla itself changes nothing, and each copy is dead-lettered with its reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from services.dispatch.app import build as dispatch
from services.intake.events import ticket_stream
from services.sla.events import EscalationRaised
from shared.keys import KeyRing
from shared.provenance import seal
from shared.settings import Settings
from tests.dispatch.support import POLICY_FILE, triaged
from tests.dispatch.test_dispatch import EVENTS, data, kind, send_triaged
from tests.support.events import publish_event
from tests.support.kafka import KafkaProbe
from tests.support.services import running

SLA_EVENTS = "sla.events"


def escalation(ticket_id: str, number: str, level: int) -> EscalationRaised:
    return EscalationRaised(
        ticket_id=ticket_id,
        number=number,
        metric="first_response",
        level=level,
        clock_id=f"{ticket_id}:first_response",
        breached_at=datetime.now(UTC),
        cause_event_id="forged",
        policy_version="v",
    )


@pytest.mark.asyncio
async def test_a_forged_escalation_changes_nothing_and_is_dead_lettered_with_its_reason(
    settings: Settings, kafka: KafkaProbe
) -> None:
    ring = KeyRing.from_settings(settings)
    dispatch_key, sla_key = ring.signing_key("dispatch"), ring.signing_key("sla")
    assert dispatch_key is not None and sla_key is not None
    [stranger] = KeyRing.generate({"sla": ["system"]})
    service = dispatch(settings.replace(policy_file=POLICY_FILE))
    async with running(service):
        ticket = triaged(1, complexity="simple", category="inquiry")
        await send_triaged(kafka, ticket)
        await kafka.await_records(EVENTS, kind("assigned"))
        before = await service.pool.fetchrow(
            "SELECT status, version, group_id, agent_id FROM tickets WHERE number = $1",
            ticket.number,
        )
        level_3 = escalation(ticket.ticket_id, ticket.number, 3)  # the directors
        stream = ticket_stream(ticket.ticket_id)

        async def forge(**how: Any) -> str:
            return await publish_event(
                kafka, SLA_EVENTS, level_3, stream_id=stream, subject=ticket.ticket_id, **how
            )

        expected = {
            # sla's source, sealed by another producer (dispatch's own key)
            await forge(source="servicedesk/sla", sealed_by=dispatch_key): "foreign_source",
            # a foreign source, sealed by that source: sla owns escalations
            await forge(source="servicedesk/dispatch", sealed_by=dispatch_key): "foreign_source",
            await forge(source="servicedesk/intake"): "foreign_source",
            # sla's name without sla's seal: none, or a key sla never had
            await forge(source="servicedesk/sla", unsealed=True): "unauthenticated",
            await forge(source="servicedesk/sla", sealed_by=stranger): "unauthenticated",
        }
        # sla's genuine seal, of other bytes (the same escalation with another id)
        [first, *_] = await kafka.await_records(SLA_EVENTS, lambda r: True, count=len(expected))
        tampered = json.loads(first.value) | {"id": "0192f6a0-0000-7000-8000-000000000001"}
        kept = [(k, v) for k, v in first.headers if not k.startswith("desk_")]
        await kafka.publish(
            SLA_EVENTS,
            json.dumps(tampered).encode(),
            key=stream,
            headers=[*kept, *seal(sla_key, first.value)],
        )
        expected[tampered["id"]] = "unauthenticated"
        # sla's genuine seal of these very bytes, its key id given twice: which copy the seal
        # was checked with is not which one a reader takes, so it is no one's
        doubled = json.loads(first.value) | {"id": "0192f6a0-0000-7000-8000-000000000002"}
        value = json.dumps(doubled).encode()
        sealed = seal(sla_key, value)
        await kafka.publish(SLA_EVENTS, value, key=stream, headers=[sealed[0], *kept, *sealed])
        expected[doubled["id"]] = "unauthenticated"
        letters = await kafka.await_records(
            f"{SLA_EVENTS}.dlq", lambda r: True, count=len(expected)
        )
        recorded = {
            r["value"]: r["reason"]
            for r in await service.pool.fetch("SELECT value, reason FROM dead_letters")
        }
        after = await service.pool.fetchrow(
            "SELECT status, version, group_id, agent_id FROM tickets WHERE number = $1",
            ticket.number,
        )
        escalated = await service.pool.fetchval(
            "SELECT count(*) FROM events WHERE type = 'servicedesk.ticket.escalated.v1'"
        )
        assert (after, escalated) == (before, 0), "a forged escalation moved the ticket"

        # The same escalation, published by sla itself, takes the ticket to the directors.
        await publish_event(kafka, SLA_EVENTS, level_3, stream_id=stream, subject=ticket.ticket_id)
        [moved] = await kafka.await_records(EVENTS, kind("escalated"))
    assert {json.loads(letter.value)["id"]: letter.header("dlq_reason") for letter in letters} == (
        expected
    )
    assert sorted(recorded.values()) == sorted(expected.values())
    assert all(letter.header("dlq_error") for letter in letters)
    assert (data(moved)["level"], data(moved)["to_group"]) == (3, "directors")

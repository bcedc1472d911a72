"""A customer's reply acts on its ticket once, through intake and dispatch on the real broker and
PostgreSQL: delivered again after dispatch has forgotten its id (``processed_retention``), it
neither resumes nor reopens the ticket a second time."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.dispatch.app import build as dispatch
from services.intake.app import build as intake
from shared.database import connect
from shared.settings import Settings
from tests.intake.requests import encode, valid
from tests.support.credentials import token
from tests.support.kafka import KafkaProbe
from tests.support.records import data, ticket_event
from tests.support.services import running
from tests.support.waiting import eventually

INTAKE, DISPATCH = "intake.events", "dispatch.events"


@pytest.mark.asyncio
async def test_a_reply_delivered_again_after_its_id_is_forgotten_does_not_act_again(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """The agent asks, the customer answers (the ticket resumes), the agent asks again. Then
    the first answer comes again — offsets reset, or expired while dispatch was down, after
    its id was purged: judged by the ticket as it is now, it resumed the ticket as if the
    customer had answered the second question. A later answer still resumes it."""
    async with running(intake(settings)), running(dispatch(settings)):
        now = datetime.now(UTC).isoformat()
        await kafka.publish("requests.incoming", encode(valid("first", received_at=now)))
        [assigned] = await kafka.await_records(DISPATCH, ticket_event("assigned"))
        number, owner = data(assigned)["number"], data(assigned)["agent_id"]
        mine = token(settings, owner)
        await kafka.ticket_command(owner, number, "accept", token=mine)

        async def ask(times: int) -> None:
            question = {"question": f"Which model? ({times})"}
            await kafka.ticket_command(
                owner, number, "request_customer_info", token=mine, **question
            )
            await kafka.await_records(DISPATCH, ticket_event("waiting_for_customer"), count=times)

        async def answer(message_id: str, times: int) -> None:
            said = {"description": f"answer {times}", "received_at": now}
            reply = valid(message_id, reply_to_ticket=number, **said)
            await kafka.publish("requests.incoming", encode(reply))
            await kafka.await_records(DISPATCH, ticket_event("resumed"), count=times)

        await ask(1)
        await answer("answer-1", 1)
        await ask(2)
        [first, *_] = await kafka.await_records(INTAKE, ticket_event("customer_replied"))

        conn = await connect(settings.require_database_url())
        try:
            await conn.execute("DELETE FROM dispatch.processed_messages")
            await kafka.publish(INTAKE, first.value, key=first.key, headers=list(first.headers))
            claimed = "SELECT count(*) FROM dispatch.processed_messages WHERE message_id = $1"
            first_id = json.loads(first.value)["id"]
            await eventually(lambda: conn.fetchval(claimed, first_id), lambda n: n == 1)
            status = await conn.fetchval(
                "SELECT status FROM dispatch.tickets WHERE number = $1", number
            )
            replayed = await kafka.all_records(DISPATCH, settle=0.5)
        finally:
            await conn.close()
        assert status == "waiting_for_customer", "the second question is still unanswered"
        assert len([r for r in replayed if ticket_event("resumed")(r)]) == 1

        await answer("answer-2", 2)

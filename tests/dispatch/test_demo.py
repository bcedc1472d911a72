"""The demo's agents and customers work tickets with commands signed by the local keys: every
ticket they take is resolved and rated, and dispatch refuses none of their commands."""

from __future__ import annotations

import asyncio

import pytest

from services.dispatch.app import build as dispatch
from services.dispatch.demo import run_desk_work
from services.intake.app import build as intake
from shared.settings import Settings
from tests.dispatch.test_dispatch import EVENTS, REJECTED, data, kind
from tests.intake.requests import encode, intake_clock, valid
from tests.support.kafka import KafkaProbe
from tests.support.services import running


@pytest.mark.asyncio
async def test_demo_agents_take_tickets_through_with_signed_commands(
    settings: Settings, kafka: KafkaProbe
) -> None:
    settings = await intake_clock(settings)  # the requests were received on a fixed day
    stop = asyncio.Event()
    async with running(intake(settings)), running(dispatch(settings)):
        # No customer reopens here (the draws' order depends on the tasks' interleaving).
        work = asyncio.create_task(
            run_desk_work(settings, stop=stop, pace=0.05, seed=1, reopen_share=0.0)
        )
        await asyncio.sleep(1)  # the demo follows assignments from now on
        for n in range(3):
            await kafka.publish("requests.incoming", encode(valid(f"demo-{n}")))
        rated = await kafka.await_records(EVENTS, kind("satisfaction_recorded"), count=3)
        stop.set()
        handled = await work
        rejected = await kafka.all_records(REJECTED, settle=0.5)
    resolved = await kafka.await_records(EVENTS, kind("resolved"), count=3)
    assert handled == 3
    assert rejected == []
    assert {data(r)["number"] for r in rated} == {data(r)["number"] for r in resolved}
    assert all(data(r)["actor"] == "customer" for r in rated)

"""`reclassify` re-routes a ticket, and `desk triage review` counts it against the rule that
misjudged it (intake and dispatch running, real broker and database)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from services.dispatch.app import build as dispatch
from services.intake.app import build as intake
from shared.settings import Settings
from tests.intake.requests import encode, intake_clock, valid
from tests.support.kafka import KafkaProbe
from tests.support.personal import opened
from tests.support.records import data, ticket_event
from tests.support.services import running

DESK = str(Path(sys.executable).parent / "desk")
CUSTOMER = {"name": "Ann", "email": "ann@example.com", "language": "en"}
REQUESTS = {
    "faded": ("Printer", "Could you have a look at the office printer? The prints look faded."),
    "invoice": ("Invoice", "Could you send me the October invoice again?"),
    "hours": ("Opening hours", "Are you open on Saturday?"),
}


@pytest.mark.asyncio
async def test_reclassify_reroutes_and_the_review_counts_it_against_the_rule(
    settings: Settings, kafka: KafkaProbe
) -> None:
    settings = await intake_clock(settings)  # the requests were received on a fixed day
    async with running(intake(settings)), running(dispatch(settings)):
        for key, (subject, description) in REQUESTS.items():
            request = valid(f"review-{key}", subject=subject, description=description,
                            customer=CUSTOMER, product_line="printer")  # fmt: skip
            await kafka.publish("requests.incoming", encode(request))
        triaged = await kafka.await_records("intake.events", ticket_event("triaged"), count=3)
        assert {data(r)["rule"] for r in triaged} == {"questions"}, "all three judged simple"
        readable = [await opened(settings, data(r)) for r in triaged]
        [faded] = [d for d in readable if d["subject"] == "Printer"]
        [first] = await kafka.await_records(
            "dispatch.events", ticket_event("assigned", number=faded["number"])
        )
        assert data(first)["group_id"] == "front-line"
        agent = data(first)["agent_id"]
        for body in (
            {"type": "accept"},
            {"type": "reclassify", "complexity": "general", "reason": "a printer fault"},
        ):
            command = {"command_id": str(uuid.uuid4()), "actor": agent,
                       "ticket_number": faded["number"], **body}  # fmt: skip
            await kafka.command("tickets.commands", command, key=faded["number"])
        [corrected] = await kafka.await_records(
            "dispatch.events", ticket_event("reclassified", number=faded["number"])
        )
        moved = await kafka.await_records(
            "dispatch.events", ticket_event("assigned", number=faded["number"]), count=2
        )
        done = await asyncio.to_thread(
            subprocess.run,
            [DESK, "triage", "review", "--json"],
            env={**os.environ, **settings.environment()},
            capture_output=True,
            text=True,
            check=False,
        )
    assert (data(corrected)["from_complexity"], data(corrected)["to_complexity"]) == (
        "simple",
        "general",
    )
    assert (data(corrected)["from_group"], data(corrected)["to_group"]) == (
        "front-line",
        "printing",
    )
    assert data(moved[-1])["group_id"] == "printing" and data(moved[-1])["cause"] == "reassigned"
    assert done.returncode == 0, done.stderr
    rules = {r["rule"]: r for r in json.loads(done.stdout)["rules"]}
    questions = rules["questions"]
    assert (questions["hits"], questions["corrected"]) == (3, 1)
    assert questions["correction_rate"] == pytest.approx(1 / 3)
    assert questions["corrected_to"] == {"general fault": 1}
    assert {"faded", "printer", "prints"} <= {word for word, _ in questions["words"]}

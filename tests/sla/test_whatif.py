"""What-if on a history built through the real services with driven time: `desk sla what-if`
replays it under a proposed policy, writes nothing, and its actual column is `desk sla report`."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from services.dispatch import queries as dispatch_queries
from services.dispatch.app import build as dispatch
from services.intake.app import build as intake
from services.policy import Policy
from services.sla import queries as sla_queries
from services.sla.app import build as sla
from services.sla.whatif import WhatIf
from shared.database import connect
from shared.policyfile import load_policy
from shared.settings import Settings
from tests.intake.requests import encode, valid
from tests.sla.support import SLA, T0, write_policy
from tests.sla.test_sla import SLA_EVENTS, command, data, sla_kind
from tests.support.kafka import KafkaProbe
from tests.support.services import running
from tests.support.time import DrivenTime

DESK = str(Path(sys.executable).parent / "desk")
ANSWERED_AFTER = {"a": 10, "f": 15, "b": 25, "c": 28, "d": 35, "e": None}
"""Minutes after dispatch at which each simple phone request gets its first response."""


def tightened(minutes: str) -> dict[str, Any]:
    """The test SLA with the simple-request response target changed."""
    sla_section = copy.deepcopy(SLA)
    [rule] = [t for t in sla_section["targets"] if t.get("when") == {"complexity": ["simple"]}]
    rule["target"] = minutes
    rule["name"] = "simple response"
    return sla_section


async def desk(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [DESK, *args],
        env={**os.environ, **settings.environment(), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        check=False,
    )


async def in_worker_processes(settings: Settings, proposed: Path) -> WhatIf:
    policy, version = load_policy(proposed, Policy)
    conn = await connect(settings.require_database_url())
    try:
        now = await sla_queries.now(conn, driven=True)
        found = await sla_queries.what_if(
            conn,
            policy,
            version,
            since=now - timedelta(days=30),
            until=now,
            stories=partial(dispatch_queries.ticket_stories, conn),
            workers=2,
            chunk=2,
        )
    finally:
        await conn.close()
    assert found is not None
    return found


async def stored(settings: Settings) -> dict[str, int]:
    """Events in the sla and dispatch stores (a what-if must add none)."""
    conn = await connect(settings.require_database_url())
    try:
        return {
            name: await conn.fetchval(f"SELECT count(*) FROM {name}.events")
            for name in ("sla", "dispatch")
        }
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_tightening_simple_response_turns_exactly_the_late_answers_into_breaches(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    current = write_policy(tmp_path / "policy.yaml", tightened("30m"))
    proposed = write_policy(tmp_path / "proposed.yaml", tightened("20m"))
    driven = settings.replace(clock="driven", policy_file=current)
    time = DrivenTime(driven, "intake", "dispatch", "sla")
    await time.set(T0)
    phone = {"channel": "phone", "subject": "How do I reset my password?",
             "description": "I forgot it", "product_line": None,
             "customer": {"name": "Ann", "phone": "+4930123456", "language": "en"}}  # fmt: skip
    async with running(intake(driven)), running(dispatch(driven)), running(sla(driven)):
        for name in ANSWERED_AFTER:
            await kafka.publish("requests.incoming", encode(valid(f"whatif-{name}", **phone)))
        assigned = await kafka.await_records(
            "dispatch.events",
            lambda r: r.header("ce_type") == "servicedesk.ticket.assigned.v1",
            count=len(ANSWERED_AFTER),
        )
        # Numbers follow arrival order; name each ticket after the request that made it.
        owner = {data(r)["number"]: data(r)["agent_id"] for r in assigned}
        numbers = dict(zip(ANSWERED_AFTER, sorted(owner), strict=True))
        for name, minutes in sorted(ANSWERED_AFTER.items(), key=lambda kv: kv[1] or 99):
            if minutes is None:
                continue
            at = T0 + timedelta(minutes=minutes)
            await time.set(at)
            number = numbers[name]
            if minutes > 30:  # past the live target: its breach fires before the late answer
                await kafka.await_records(SLA_EVENTS, sla_kind("escalated", level=1, number=number))
            await command(kafka, at, number, "accept", owner[number])
            await command(
                kafka, at, number, "respond", owner[number], message="Use the reset link."
            )
            await kafka.await_records(
                SLA_EVENTS, sla_kind("clock_met", metric="first_response", number=number)
            )
        await time.set(T0 + timedelta(minutes=45))  # e never answered: breached at 30
        await kafka.await_records(
            SLA_EVENTS, sla_kind("clock_breached", metric="first_response"), count=2
        )
        await kafka.await_records(SLA_EVENTS, sla_kind("escalated", level=1), count=2)
        # dispatch's answer to them, before the services stop: moved up the ladder.
        await kafka.await_records(
            "dispatch.events",
            lambda r: r.header("ce_type") == "servicedesk.ticket.escalated.v1",
            count=2,
        )
    # Stopped: nothing but the what-if can write while it is compared with the stores.
    before = await stored(driven)
    report, same, what_if = [
        await desk(driven, *args)
        for args in (
            ["sla", "report", "--days", "30", "--json"],
            ["sla", "what-if", str(current), "--days", "30", "--json"],
            ["sla", "what-if", str(proposed), "--days", "30", "--json"],
        )
    ]
    table = await desk(driven, "sla", "what-if", str(proposed), "--days", "30")
    in_processes = await in_worker_processes(driven, proposed)
    after = await stored(driven)
    for done in (report, same, what_if, table):
        assert done.returncode == 0, done.stdout + done.stderr
    assert after == before, "a what-if writes nothing"
    actual = json.loads(report.stdout)["compliance"]
    result = json.loads(what_if.stdout)

    # The actual column is the report, row for row.
    assert [side["actual"] for side in result["comparison"]] == actual
    first = {
        side["metric"]: (side["actual"]["met"], side["actual"]["breached"],
                         side["proposed"]["met"], side["proposed"]["breached"])
        for side in result["comparison"] if side["metric"] == "first_response"
    }  # fmt: skip
    assert first == {"first_response": (4, 2, 2, 4)}

    # Exactly b and c (answered at 25 and 28 minutes) go from met to breached, and say why.
    changed = {(c["number"], c["metric"], c["actual"], c["proposed"]) for c in result["changes"]}
    assert changed == {
        (numbers["b"], "first_response", "met", "breached"),
        (numbers["c"], "first_response", "met", "breached"),
    }
    why = {c["number"]: c["why"] for c in result["changes"]}
    assert why[numbers["b"]] == (
        "took 25m; rule simple response, target 30m on always -> "
        "rule simple response, target 20m on always: breached at 2026-11-20 08:20 UTC"
    )
    assert result["tickets"] == len(ANSWERED_AFTER)

    # Replayed under the policy in force, the live figures come back exactly: one code path.
    unchanged = json.loads(same.stdout)
    assert unchanged["changes"] == []
    assert all(side["proposed"] == side["actual"] for side in unchanged["comparison"])

    assert numbers["b"] in table.stdout and "nothing was written or published" in table.stdout

    # Replayed two tickets at a time in two worker processes: the same answer.
    assert [(c.number, c.metric, c.actual, c.proposed, c.why) for c in in_processes.changes] == [
        (c["number"], c["metric"], c["actual"], c["proposed"], c["why"]) for c in result["changes"]
    ]
    assert len(in_processes.comparison) == len(result["comparison"])

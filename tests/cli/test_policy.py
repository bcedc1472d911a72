"""Policy changes as operators make them, with intake and dispatch running and time driven:
`desk policy diff` refuses a version that strands tickets, `desk policy apply` puts an accepted
one in the policy directory, services switch at its effective_from — not before — and the
tickets of the groups it retires move; escalations naming a retired group still work."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.dispatch.app import build as dispatch
from services.intake.app import build as intake
from shared.database import connect
from shared.settings import Settings
from tests.intake.requests import encode, valid
from tests.sla.support import T0
from tests.support.events import escalation, publish_event
from tests.support.kafka import KafkaProbe
from tests.support.policies import shipped, without_groups
from tests.support.records import data, ticket_event
from tests.support.services import running
from tests.support.time import DrivenTime

DESK = str(Path(sys.executable).parent / "desk")
OFF_SHIFT = {"zhou.min", "mark.chen", "wu.hao"}
"""Nobody in printing or network has room: their tickets queue."""


def document() -> dict[str, Any]:
    found = shipped()
    for agent in found["directory"]["agents"]:
        agent["on_shift"] = agent["id"] not in OFF_SHIFT
    return found


MOVES = {"printing": "network", "supervisors": "experts"}


def write(path: Path, found: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(found, allow_unicode=True, sort_keys=False))
    return path


async def desk(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [DESK, "policy", *args],
        env={**os.environ, **settings.environment(), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        check=False,
    )


def handled(ticket: dict[str, Any], group: str) -> Any:
    return ticket_event("assigned", number=ticket["number"], group_id=group)


async def escalate(kafka: KafkaProbe, ticket: dict[str, Any], level: int) -> None:
    """An SLA escalation of the ticket, as sla publishes it."""
    raised = escalation(ticket["ticket_id"], ticket["number"], level)
    await publish_event(kafka, "sla.events", raised, stream_id=raised.clock_id,
                        subject=ticket["ticket_id"], source="servicedesk/sla")  # fmt: skip


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_group_removal_is_refused_without_moved_to_and_applied_at_its_moment_with_it(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    versions = tmp_path / "policy.d"
    versions.mkdir()
    write(versions / "base.yaml", {"approved_by": "钱慧", **document()})
    driven = settings.replace(clock="driven", policy_file=versions)
    time = DrivenTime(driven, "intake", "dispatch")
    await time.set(T0)
    effective = T0 + timedelta(hours=1)
    stranding = write(tmp_path / "stranding.yaml", without_groups(document(), MOVES))
    mapped = without_groups(document(), MOVES, retire=True)
    mapped["numbering"]["prefix"] = "SR"
    proposal = write(
        tmp_path / "proposal.yaml",
        {"effective_from": effective.isoformat(), "approved_by": "孙宇", **mapped},
    )
    ask = {"channel": "phone", "subject": "How do I reset my password?", "product_line": None,
           "description": "I forgot it", "customer": {"name": "Ann", "phone": "+4930123456",
                                                       "language": "en"}}  # fmt: skip
    async with running(intake(driven)), running(dispatch(driven)):
        for n in (1, 2):  # printer faults: queued in printing
            await kafka.publish("requests.incoming", encode(valid(f"printer-{n}")))
        await kafka.publish("requests.incoming", encode(valid("question", **ask)))
        queued = await kafka.await_records("dispatch.events", ticket_event("queued"), count=2)
        assert {data(r)["group_id"] for r in queued} == {"printing"}
        [asked] = await kafka.await_records("dispatch.events", ticket_event("assigned"))
        question = data(asked)
        for level in (1, 2):  # level 2 of the ladder in force: the supervisors
            await escalate(kafka, question, level)
        await kafka.await_records(
            "dispatch.events",
            ticket_event("assigned", number=question["number"], group_id="supervisors"),
        )

        refused = await desk(driven, "diff", str(stranding))
        applied_stranding = await desk(driven, "apply", str(stranding))
        diff = await desk(driven, "diff", str(proposal))
        applied = await desk(driven, "apply", str(proposal))
        pending = await desk(driven, "history")

        await time.set(effective - timedelta(minutes=1))
        await kafka.publish("requests.incoming", encode(valid("before", **ask)))
        asked_again = lambda r: (  # noqa: E731 - the subject is sealed: match the messages
            ticket_event("received")(r)
            and data(r)["channel_message_id"] != "printer-1"
            and data(r)["channel_message_id"] != "printer-2"
        )
        before = (await kafka.await_records("intake.events", asked_again, count=2))[-1]
        await asyncio.sleep(2)  # a switch would take the policy worker ≤ 1 s
        early = await kafka.all_records("dispatch.events", settle=0.5)
        assert not [r for r in early if ticket_event("reassigned", actor="system")(r)], "not before"

        await time.set(effective)
        moved = await kafka.await_records(
            "dispatch.events", ticket_event("reassigned", actor="system"), count=3
        )
        requeued = await kafka.await_records(
            "dispatch.events", ticket_event("queued", group_id="network"), count=2
        )
        await kafka.await_records(
            "dispatch.events",
            ticket_event("assigned", number=question["number"], group_id="experts"),
        )
        await escalate(kafka, question, 3)  # the ladder goes on from the group that took it
        await kafka.await_records(
            "dispatch.events",
            ticket_event("assigned", number=question["number"], group_id="directors"),
        )
        printer = data(queued[0])
        for level in (1, 2):  # a ticket of the retired group escalated under the new ladder
            await escalate(kafka, printer, level)
        [taken] = await kafka.await_records(
            "dispatch.events", ticket_event("escalated", number=printer["number"], level=2)
        )
        await kafka.publish("requests.incoming", encode(valid("after", **ask)))
        numbers = await kafka.await_records("intake.events", asked_again, count=3)
        history = await desk(driven, "history")
        conn = await connect(driven.require_database_url())
        try:
            dead = await conn.fetchval("SELECT count(*) FROM dispatch.dead_letters")
        finally:
            await conn.close()

    assert refused.returncode == 1, refused.stdout
    assert "refused: group printing is removed but it holds open tickets (2 queued)" in (
        refused.stdout
    )
    assert "group supervisors is removed but it holds open tickets (1 assigned) and " \
           "escalation level 2 names it" in refused.stdout  # fmt: skip
    assert "refused: approved_by is missing" in refused.stdout, "unsigned, and undated"
    assert "refused: effective_from is missing" in refused.stdout
    assert applied_stranding.returncode == 1 and "nothing was applied" in applied_stranding.stdout
    assert diff.returncode == 0, diff.stdout
    assert "group printing removed, its tickets move to network" in diff.stdout
    assert "group printing: 2 open (2 queued) — re-routed to network" in diff.stdout
    assert f"takes effect {effective.isoformat()}; approved by 孙宇" in diff.stdout
    assert applied.returncode == 0, applied.stdout
    assert len(list(versions.glob("*.yaml"))) == 2
    assert "pending:" in pending.stdout and "孙宇" in pending.stdout

    assert data(before)["number"].startswith("REQ-"), "the old version until its moment"
    assert sorted(data(r)["from_group"] for r in moved) == ["printing", "printing", "supervisors"]
    reasons = {data(r)["reason"] for r in moved}
    assert any(r.startswith("group printing retired by policy sha256:") for r in reasons)
    assert {data(r)["number"] for r in requeued} == {data(r)["number"] for r in queued}
    assert data(taken)["to_group"] == "experts"
    assert data(numbers[-1])["number"].startswith("SR-"), "the new version from its moment"
    assert dead == 0, "no reload made a consumer fail"
    assert history.returncode == 0, history.stdout
    assert "no version pending" in history.stdout
    assert "孙宇" in history.stdout and "钱慧" in history.stdout
    assert effective.isoformat(timespec="seconds") in history.stdout

"""`desk sla report`: the figures an operator reads, from the running sla's projection."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from services.cli import app as desk
from services.dispatch.events import SatisfactionRecorded, TicketResponded
from services.sla.app import build as sla
from shared.settings import Settings
from tests.sla.support import T0, classified, write_policy
from tests.sla.test_sla import SLA_EVENTS, send_classified, sla_kind
from tests.support.events import publish_event
from tests.support.kafka import KafkaProbe
from tests.support.services import running
from tests.support.time import DrivenTime
from tests.support.waiting import eventually

DESK = str(Path(sys.executable).parent / "desk")


@pytest.mark.asyncio
async def test_the_report_counts_met_breached_and_at_risk(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    driven = settings.replace(
        clock="driven", policy_file=write_policy(tmp_path / "p.yaml"), sla_report_interval="100ms"
    )
    time = DrivenTime(driven, "sla", marks=kafka)
    now = T0
    await time.set(now)
    async with running(sla(driven)):
        for n in range(3):
            await send_classified(kafka, classified(n), now)
        answered = classified(0)
        await publish_event(
            kafka,
            "dispatch.events",
            TicketResponded(
                ticket_id=answered.ticket_id,
                number=answered.number,
                agent_id="ann",
                message="on it",
                first_response=True,
            ),
            stream_id=f"ticket-{answered.ticket_id}",
            version=2,  # after its classification
            subject=answered.ticket_id,
            time=now + timedelta(minutes=10),
        )
        await kafka.await_records(SLA_EVENTS, sla_kind("clock_met", metric="first_response"))
        await time.set(now + timedelta(minutes=31))
        await kafka.await_records(
            SLA_EVENTS, sla_kind("clock_breached", metric="first_response"), count=2
        )
        gauge = {"metric": "first_response", "group": "front-line"}
        await eventually(
            lambda: _sample("desk_sla_compliance_ratio", gauge),
            lambda value: value == pytest.approx(1 / 3),
            what="compliance gauge",
        )
        assert await _sample("desk_sla_tickets_breached_open") == 2
        for n, score in ((0, 5), (1, 2)):  # one satisfied customer of two: CSAT 50 %
            rated = classified(n)
            await publish_event(
                kafka,
                "dispatch.events",
                SatisfactionRecorded(
                    ticket_id=rated.ticket_id,
                    number=rated.number,
                    score=score,
                    comment="",
                    actor="customer",
                ),
                stream_id=f"ticket-{rated.ticket_id}",
                subject=rated.ticket_id,
                time=now + timedelta(minutes=40),
            )
        await eventually(
            lambda: _sample("desk_sla_csat_ratio", {"group": "front-line"}),
            lambda value: value == pytest.approx(0.5),
            what="CSAT gauge",
        )
        assert await _sample("desk_sla_csat_ratio", {"group": "all"}) == pytest.approx(0.5)
        assert await _sample("desk_sla_csat_target_ratio") == pytest.approx(0.9)
        env = {**os.environ, **driven.environment()}
        done, table = [
            await asyncio.to_thread(
                subprocess.run,
                [DESK, "sla", "report", "--days", "30", *extra],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            for extra in (["--json"], [])
        ]
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    first = [c for c in report["compliance"] if c["metric"] == "first_response"]
    assert [(c["group_id"], c["met"], c["breached"]) for c in first] == [("front-line", 1, 2)]
    assert first[0]["ratio"] == pytest.approx(1 / 3)
    assert report["mean_first_response_s"] == 600
    assert report["tickets_breached_open"] == 2
    csat = {c["group_id"]: c for c in report["csat"]}
    assert sorted(csat) == ["all", "front-line"]
    assert (csat["front-line"]["satisfied"], csat["front-line"]["rated"]) == (1, 2)
    assert csat["all"]["ratio"] == 0.5 and csat["all"]["below_target"] is True
    assert table.returncode == 0, table.stderr
    assert "33.3%" in table.stdout and "mean time to first response: 10.0 min" in table.stdout
    assert "target 90%" in table.stdout and "50.0% below target" in table.stdout


async def _sample(name: str, labels: dict[str, str] | None = None) -> float | None:
    """A gauge of this process's registry (the sla service runs in the test's process)."""
    return REGISTRY.get_sample_value(name, labels or {})


@pytest.mark.unit
@pytest.mark.parametrize(
    "command",
    [
        ["sla", "report", "--days", "99999999"],
        ["sla", "report", "--days", "99999999999999999999"],
        ["sla", "what-if", "policy.yaml", "--days", "99999999"],
        ["triage", "review", "--days", "999999999"],
    ],
)
def test_a_look_back_past_the_calendar_is_an_argument_error(command: list[str]) -> None:
    result = CliRunner().invoke(desk, command)
    assert result.exit_code == 2, result.output
    assert "--days" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)

"""The demo adapter publishes a realistic mix, and intake takes it."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from services.intake.app import build
from services.intake.contract import Refusal, Request, read_request
from services.intake.demo import DemoTraffic, run_demo
from services.intake.triage import triage
from services.policy import DEFAULT_POLICY, Policy
from shared.policyfile import load_policy
from shared.settings import Settings
from tests.support.kafka import KafkaProbe
from tests.support.services import running


@pytest.mark.unit
def test_the_mix_covers_channels_languages_complexities_and_complaints() -> None:
    policy, version = load_policy(DEFAULT_POLICY, Policy)
    traffic = DemoTraffic(seed=7)
    traffic.known_tickets.append(
        ("REQ-2026-000001", {"name": "王芳", "email": "wang.fang@example.com"})
    )
    seen: Counter[str] = Counter()
    for _ in range(600):
        _, value = traffic.next()
        request = read_request(value)
        if isinstance(request, Refusal):
            seen["refused"] += 1
            continue
        assert isinstance(request, Request)
        result = triage(request, policy.triage, version)
        seen[f"channel:{request.channel}"] += 1
        seen[f"language:{result.language}"] += 1
        seen[f"complexity:{result.complexity}"] += 1
        seen[f"complaint:{result.complaint_severity}"] += 1
        seen["reply" if request.reply_to_ticket else "new"] += 1
    for key in (
        *(f"channel:{c}" for c in ("phone", "chat", "email", "web", "api")),
        "language:zh",
        "language:en",
        "complexity:simple",
        "complexity:general",
        "complexity:complex",
        "complaint:ordinary",
        "complaint:major",
        "reply",
    ):
        assert seen[key] > 0, key
    assert 0 < seen["refused"] < 60


@pytest.mark.asyncio
async def test_run_demo_publishes_requests_intake_turns_into_tickets(
    settings: Settings, kafka: KafkaProbe
) -> None:
    async with running(build(settings)):
        sent = await run_demo(settings, rate=0, stop=asyncio.Event(), count=40, seed=3)
        published = await kafka.await_records("requests.incoming", lambda r: True, count=40)
        outcomes = await kafka.read(
            "intake.events",
            until=lambda rs: (
                sum(r.header("ce_type") == "servicedesk.ticket.received.v1" for r in rs) >= 30
            ),
        )
    assert sent == len(published) == 40
    assert sum(r.header("ce_type") == "servicedesk.ticket.received.v1" for r in outcomes) >= 30

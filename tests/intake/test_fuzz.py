"""1,000 generated payloads: each is accepted or refused with a known reason, in-process and
through the running service; the consumer never stops."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.intake.app import build
from services.intake.contract import Reason, Refusal, Request, read_request
from services.intake.triage import triage
from services.policy import DEFAULT_POLICY, Policy
from shared.policyfile import load_policy
from shared.settings import Settings
from tests.intake.requests import intake_clock
from tests.support.kafka import KafkaProbe
from tests.support.services import running

POLICY, VERSION = load_policy(DEFAULT_POLICY, Policy)
NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
"""Intake's (driven) clock: most generated requests were received in the week before."""
RECENT = st.datetimes(
    min_value=(NOW - timedelta(days=6)).replace(tzinfo=None),
    max_value=(NOW - timedelta(days=1)).replace(tzinfo=None),
    timezones=st.timezones(),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


plausible_requests = st.fixed_dictionaries(
    {
        "channel": st.sampled_from(["phone", "chat", "email", "web", "api"]),
        # Mostly ids as programs make them; now and then any text (a control character in an
        # id is refused: control_character).
        "channel_message_id": st.one_of(
            *[st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=40)] * 7,
            st.text(min_size=1, max_size=40),
        ).filter(str.strip),
        "received_at": st.one_of(RECENT, RECENT, st.datetimes(timezones=st.timezones())).map(
            lambda d: d.isoformat()
        ),
        "customer": st.fixed_dictionaries(
            {
                "name": st.text(min_size=1, max_size=60).filter(str.strip),
                "email": st.emails().map(str),
            },
            optional={
                "phone": st.from_regex(r"\+[1-9][0-9]{5,14}|[1-9][0-9]{5,16}", fullmatch=True),
                "language": st.sampled_from(["zh", "zh-CN", "en", "en-GB", "fr"]),
                "tier": st.sampled_from(["standard", "vip"]),
            },
        ),
        "subject": st.text(min_size=1, max_size=300).filter(str.strip),
        "description": st.text(min_size=1, max_size=500).filter(str.strip),
    },
    optional={
        "priority": st.sampled_from(["low", "normal", "high", "urgent"]),
        "product_line": st.sampled_from(["pc", "printer", "erp"]),
        "problem_type": st.sampled_from(["question", "complaint", "integration"]),
        "reply_to_ticket": st.just("REQ-1999-000001"),
        "attachments": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.text(min_size=1, max_size=20).filter(str.strip),
                    "size": st.integers(0, 10**6),
                    "content_type": st.sampled_from(["image/png", "text/plain"]),
                    "url": st.just("https://files.example.com/x"),
                }
            ),
            max_size=3,
        ),
    },
)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A plausible request, left alone or with one field replaced, removed or added."""
    request: dict[str, Any] = draw(plausible_requests)
    action = draw(st.sampled_from(["none", "none", "replace", "remove", "add", "customer"]))
    if action == "replace":
        request[draw(st.sampled_from(sorted(request)))] = draw(json_values)
    elif action == "remove":
        del request[draw(st.sampled_from(sorted(request)))]
    elif action == "add":
        request[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    elif action == "customer":
        request["customer"][draw(st.sampled_from(["name", "email", "phone", "x"]))] = draw(
            json_values
        )
    return request


requests = mutated()

payloads = st.one_of(
    requests.map(lambda d: json.dumps(d, ensure_ascii=False).encode()),
    requests.map(lambda d: json.dumps(d).encode()[: len(json.dumps(d)) // 2]),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)


def outcome(payload: bytes) -> Request | Refusal:
    """What intake decides about a payload, checked against the contract's promises."""
    result = read_request(payload)
    if isinstance(result, Refusal):
        assert result.reason in Reason.all(), result
        assert result.message
    else:
        decided = triage(result, POLICY.triage, VERSION)
        assert decided.complexity in {"simple", "general", "complex"}
    return result


@pytest.mark.asyncio
async def test_a_thousand_generated_payloads_are_each_accepted_or_refused(
    settings: Settings, kafka: KafkaProbe
) -> None:
    generated: dict[bytes, Request | Refusal] = {}

    @settings_for_fuzz
    @given(payload=payloads)
    def read_each(payload: bytes) -> None:
        generated[payload] = outcome(payload)

    read_each()
    assert len(generated) >= 1000, f"only {len(generated)} distinct payloads"

    # Give every accepted request its own message id, so each must become exactly one ticket.
    published: list[tuple[bytes, Request | Refusal]] = []
    for n, (original, first) in enumerate(generated.items()):
        payload, result = original, first
        if isinstance(first, Request):
            document = json.loads(original)
            document["channel_message_id"] = f"fuzz-{n}"
            payload = json.dumps(document, ensure_ascii=False).encode()
            result = outcome(payload)
            assert isinstance(result, Request)
        published.append((payload, result))

    accepted = [r for _, r in published if isinstance(r, Request)]
    # Replies, and requests received outside the policy's bounds around intake's clock, are
    # valid in shape and refused by intake.
    new_tickets = [
        r
        for r in accepted
        if not r.reply_to_ticket and POLICY.intake.received_at.allows(r.received_at, NOW)
    ]
    # Replies name ticket REQ-1999-000001, which does not exist: refused by intake.
    refused = len(published) - len(new_tickets)
    assert len(new_tickets) >= 100, f"only {len(new_tickets)} valid requests in the mix"
    assert refused >= 100, f"only {refused} refusals in the mix"

    service = build(await intake_clock(settings, NOW))
    async with running(service):
        for payload, _ in published:
            await kafka.publish("requests.incoming", payload)
        tickets = await kafka.await_records(
            "intake.events",
            lambda r: r.header("ce_type") == "servicedesk.ticket.received.v1",
            count=len(new_tickets),
            timeout=120,
        )
        rejections = await kafka.await_records(
            "requests.rejected", lambda r: True, count=refused, timeout=120
        )
        assert all((await service.readiness()).values()), "the consumer is still running"
    assert sorted(json.loads(t.value)["data"]["channel_message_id"] for t in tickets) == sorted(
        r.channel_message_id for r in new_tickets
    )
    reasons = {json.loads(r.value)["data"]["reason"] for r in rejections}
    assert reasons <= Reason.all()
    assert len(rejections) == refused


settings_for_fuzz = settings(
    max_examples=1200,
    deadline=None,
    database=None,
    derandomize=True,  # the same 1,200 payloads on every run: CI must not be a lottery
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

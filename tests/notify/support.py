"""Policies and events for notify tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from services.intake.events import CustomerDetails, TicketReceived, TicketTriaged
from services.policy import DEFAULT_POLICY
from shared.local.sinks import HttpReceiver
from tests.sla.support import T0


def notify_policy(
    path: Path, receiver: HttpReceiver, *, no_webhook: frozenset[str] = frozenset()
) -> Path:
    """The shipped policy with every agent's webhook pointing at the receiver (``/agents/<id>``),
    except the agents in ``no_webhook`` (they get email)."""
    document = yaml.safe_load(DEFAULT_POLICY.read_text())
    for agent in document["directory"]["agents"]:
        if agent["id"] not in no_webhook:
            agent["webhook_url"] = receiver.url(f"/agents/{agent['id']}")
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False))
    return path


def agent_notices(http: HttpReceiver, agent_id: str, template: str) -> list[dict[str, Any]]:
    """The notices of ``template`` posted to an agent's webhook (the receiver) so far."""
    posted = [r.json() for r in http.at(f"/agents/{agent_id}")]
    return [p for p in posted if p["template"] == template]


def ticket_id(n: int) -> str:
    return f"00000000-0000-7000-8000-{n:012d}"


def received(n: int, **customer: Any) -> TicketReceived:
    details = {"name": f"客户{n}", "email": f"c{n}@example.com", "language": "zh", **customer}
    return TicketReceived(
        ticket_id=ticket_id(n),
        number=f"REQ-2026-{n:06d}",
        channel="email",
        channel_message_id=f"m-{n}",
        received_at=T0,
        customer=CustomerDetails(**details),
        subject=f"问题 {n}",
        description="...",
        priority="normal",
        language="zh",
    )


def triaged(n: int) -> TicketTriaged:
    return TicketTriaged(
        ticket_id=ticket_id(n),
        number=f"REQ-2026-{n:06d}",
        complexity="simple",
        category="inquiry",
        complaint=False,
        complaint_severity="none",
        rule="test",
        matched=[],
        reason="test",
        policy_version="v",
        channel="email",
        priority="normal",
        language="zh",
        subject=f"问题 {n}",
        received_at=T0,
    )

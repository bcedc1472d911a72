"""SLA test policies and dispatch events, for the pure tests and the end-to-end ones."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from services.dispatch.events import TicketClassified
from services.policy import DEFAULT_POLICY, Policy
from services.policy.sla import SlaPolicy
from shared.policyfile import parse_policy, policy_version

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)  # a Friday
SLA: dict[str, Any] = {
    "calendars": {
        "always": {"always": True},
        "office": {
            "time_zone": "Europe/Berlin",
            "hours": {d: ["09:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
            "holidays": ["2026-11-23"],
        },
    },
    "metrics": {
        "first_response": {"starts": "dispatched", "fulfilled_by": ["responded"]},
        "start_of_work": {
            "starts": "assigned",
            "fulfilled_by": ["work_started", "resolved"],
            "pauses_when_waiting": True,
        },
        "resolution": {
            "starts": "received",
            "fulfilled_by": ["resolved"],
            "pauses_when_waiting": True,
            "restarts_on_reopen": True,
        },
        "complaint_first_contact": {"starts": "received", "fulfilled_by": ["responded"]},
    },
    "targets": [
        {
            "metric": "complaint_first_contact",
            "when": {"complaint": True},
            "target": "10m",
            "calendar": "always",
        },
        {
            "metric": "first_response",
            "when": {"channel": ["web"]},
            "target": "30m",
            "calendar": "office",
        },
        {
            "metric": "first_response",
            "when": {"complexity": ["simple"]},
            "target": "30m",
            "calendar": "always",
        },
        {"metric": "first_response", "target": "2h", "calendar": "always"},
        {"metric": "start_of_work", "target": "4h", "calendar": "always"},
        {"metric": "resolution", "target": "24h", "calendar": "always"},
    ],
    "warnings": [0.75, 0.9],
    "escalation": [
        {"level": 1, "after": "0m"},
        {"level": 2, "after": "30m"},
        {"level": 3, "after": "1h"},
    ],
}


def policy_text(sla: dict[str, Any] | None = None) -> bytes:
    """The shipped policy with this SLA section."""
    document = yaml.safe_load(DEFAULT_POLICY.read_text())
    document["sla"] = sla if sla is not None else SLA
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False).encode()


def write_policy(path: Path, sla: dict[str, Any] | None = None) -> Path:
    path.write_bytes(policy_text(sla))
    return path


def sla_policy(sla: dict[str, Any] | None = None) -> tuple[SlaPolicy, str]:
    content = policy_text(sla)
    policy = parse_policy(content, Policy)
    assert policy.sla is not None
    return policy.sla, policy_version(content)


def classified(n: int, **changes: Any) -> TicketClassified:
    values: dict[str, Any] = {
        "ticket_id": f"00000000-0000-7000-8000-{n:012d}",
        "number": f"REQ-2026-{n:06d}",
        "group_id": "front-line",
        "route": "complexity:simple",
        "reason": "test",
        "complexity": "simple",
        "category": "inquiry",
        "complaint": False,
        "complaint_severity": "none",
        "channel": "phone",
        "priority": "normal",
        "language": "en",
        "subject": f"ticket {n}",
        "received_at": T0,
        "policy_version": "v",
    }
    values.update(changes)
    return TicketClassified(**values)

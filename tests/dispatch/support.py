"""Building desks and triaged tickets for dispatch tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.dispatch.desk import Desk, board_from
from services.intake.events import TicketTriaged
from services.policy import Policy
from shared.policyfile import load_policy
from tests.support.recorded import Recorded

POLICY_FILE = Path(__file__).with_name("policy.yaml")
POLICY, VERSION = load_policy(POLICY_FILE, Policy)
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def desk(policy: Policy = POLICY, loads: dict[str, int] | None = None) -> tuple[Desk, Recorded]:
    recorded = Recorded()
    board = board_from(policy, {}, loads or {}, {})
    return Desk(policy, VERSION, T0, board, recorded), recorded


def triaged(n: int, **changes: Any) -> TicketTriaged:
    values: dict[str, Any] = {
        "ticket_id": f"00000000-0000-7000-8000-{n:012d}",
        "number": f"REQ-2026-{n:06d}",
        "complexity": "general",
        "category": "fault",
        "complaint": False,
        "complaint_severity": "none",
        "rule": "test",
        "matched": [],
        "reason": "test",
        "policy_version": "v",
        "channel": "email",
        "priority": "normal",
        "language": "zh",
        "product_line": None,
        "problem_type": None,
        "customer_tier": None,
        "subject": f"ticket {n}",
        "received_at": T0 + timedelta(minutes=n),
    }
    values.update(changes)
    return TicketTriaged(**values)

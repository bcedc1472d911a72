"""Reading records a test awaits on a topic: their data, and matching ticket events."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from shared.deadletter import Record


def data(record: Record) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(record.value)["data"]
    return found


def ticket_event(name: str, **fields: Any) -> Callable[[Record], bool]:
    """Matches ``servicedesk.ticket.<name>.v1`` records whose data has these fields."""
    return event(f"ticket.{name}", **fields)


def event(kind: str, **fields: Any) -> Callable[[Record], bool]:
    """Matches ``servicedesk.<kind>.v1`` records (``sla.clock_met``) whose data has these
    fields."""

    def match(record: Record) -> bool:
        if record.header("ce_type") != f"servicedesk.{kind}.v1":
            return False
        return all(data(record).get(k) == v for k, v in fields.items())

    return match

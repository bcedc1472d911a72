"""The words of the process (``../shared/brief/sop.md``) that every service and the policy share."""

from __future__ import annotations

from typing import Literal

Channel = Literal["phone", "chat", "email", "web", "api"]
"""Where a request came in."""

Priority = Literal["low", "normal", "high", "urgent"]
"""How urgent the customer (or the adapter) says it is; queues serve higher first."""

Complexity = Literal["simple", "general", "complex"]
"""Preliminary judgement at intake: simple inquiry, general fault, complex problem."""

Category = Literal["inquiry", "fault", "problem", "complaint"]
"""What kind of request it is; complaints are a category of their own with their own targets."""

ComplaintSeverity = Literal["none", "ordinary", "major"]
"""Major complaints go to a director; ordinary ones stay with customer service."""

RouteCause = Literal["classified", "queue", "reassigned", "escalated", "reopened"]
"""Why dispatch routes a ticket (to an agent, or into the queue): new from triage, served from the
queue, moved by a person, escalated, reopened."""

PRIORITY_RANK: dict[Priority, int] = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
"""Queue order: lower rank is served first."""

CATEGORY_OF: dict[Complexity, Category] = {
    "simple": "inquiry",
    "general": "fault",
    "complex": "problem",
}

CUSTOMER_COMMANDS: tuple[str, ...] = ("record_satisfaction", "reopen")
"""What a customer's token (the survey link of a resolution notice) lets them do to their ticket."""

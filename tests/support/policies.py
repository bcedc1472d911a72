"""Policy documents for tests: the shipped one, and one without some of its groups."""

from __future__ import annotations

from typing import Any

import yaml

from services.policy import DEFAULT_POLICY, Policy
from shared.policyfile import parse_policy


def shipped() -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load(DEFAULT_POLICY.read_text())
    return found


def without_groups(
    document: dict[str, Any], moves: dict[str, str], *, retire: bool = False
) -> dict[str, Any]:
    """The document without the groups ``moves`` names: their agents, escalation steps (and,
    with ``retire``, their tickets, as ``retired_groups``) go where it says; their matrix rows
    go."""
    directory, routing = document["directory"], document["routing"]
    directory["groups"] = [g for g in directory["groups"] if g["id"] not in moves]
    for agent in directory["agents"]:
        agent["groups"] = sorted({moves.get(g, g) for g in agent["groups"]})
    routing["matrix"] = [r for r in routing["matrix"] if r["group"] not in moves]
    for step in routing["escalation"]:
        if step.get("group") in moves:
            step["group"] = moves[step["group"]]
    if retire:
        directory["retired_groups"] = [{"id": g, "moved_to": to} for g, to in moves.items()]
    return document


def parsed(document: dict[str, Any]) -> Policy:
    return parse_policy(yaml.safe_dump(document, allow_unicode=True).encode(), Policy)

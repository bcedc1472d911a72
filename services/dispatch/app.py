"""Wiring of the dispatch service: what it consumes, produces and projects."""

from __future__ import annotations

from shared.migrations import load
from shared.service import Service
from shared.settings import Settings

EVENTS_TOPIC = "dispatch.events"
MIGRATIONS = load("dispatch", "services.dispatch")


def route(event_type: str) -> str:
    """Every dispatch event goes to ``dispatch.events``."""
    return EVENTS_TOPIC


def build(settings: Settings) -> Service:
    return Service(
        "dispatch",
        settings,
        description="Classification matrix, routing to groups and agents, the ticket lifecycle.",
        routes=route,
        produces=[EVENTS_TOPIC],
        migrations=MIGRATIONS,
    )

"""Wiring of the dispatch service: what it consumes, produces and projects."""

from __future__ import annotations

from shared.migrations import load
from shared.service import Service
from shared.settings import Settings

EVENTS_TOPIC = "dispatch.events"
MIGRATIONS = load("dispatch", "services.dispatch")


def build(settings: Settings) -> Service:
    return Service(
        "dispatch",
        settings,
        description="Classification matrix, routing to groups and agents, the ticket lifecycle.",
        publishes={EVENTS_TOPIC: []},
        migrations=MIGRATIONS,
    )

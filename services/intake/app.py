"""Wiring of the intake service: what it consumes, produces and projects."""

from __future__ import annotations

from shared.migrations import load
from shared.service import Service
from shared.settings import Settings

EVENTS_TOPIC = "intake.events"
MIGRATIONS = load("intake", "services.intake")


def route(event_type: str) -> str:
    """Every intake event goes to ``intake.events``."""
    return EVENTS_TOPIC


def build(settings: Settings) -> Service:
    return Service(
        "intake",
        settings,
        description="Requests from every channel in; numbered, recorded and triaged tickets out.",
        routes=route,
        produces=[EVENTS_TOPIC],
        migrations=MIGRATIONS,
    )

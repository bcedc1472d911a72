"""Wiring of the sla service: what it consumes, produces and projects."""

from __future__ import annotations

from shared.migrations import load
from shared.service import Service
from shared.settings import Settings

EVENTS_TOPIC = "sla.events"
MIGRATIONS = load("sla", "services.sla")


def route(event_type: str) -> str:
    """Every sla event goes to ``sla.events``."""
    return EVENTS_TOPIC


def build(settings: Settings) -> Service:
    return Service(
        "sla",
        settings,
        description="Response-time clocks on business calendars, warnings, escalation ladder.",
        routes=route,
        produces=[EVENTS_TOPIC],
        migrations=MIGRATIONS,
    )

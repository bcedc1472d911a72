"""Wiring of the sla service: what it consumes, produces and projects."""

from __future__ import annotations

from shared.migrations import load
from shared.service import Service
from shared.settings import Settings

EVENTS_TOPIC = "sla.events"
MIGRATIONS = load("sla", "services.sla")


def build(settings: Settings) -> Service:
    return Service(
        "sla",
        settings,
        description="Response-time clocks on business calendars, warnings, escalation ladder.",
        publishes={EVENTS_TOPIC: []},
        migrations=MIGRATIONS,
    )

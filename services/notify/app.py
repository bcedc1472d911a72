"""Wiring of the notify service: what it consumes, produces and projects."""

from __future__ import annotations

from shared.migrations import load
from shared.service import Service
from shared.settings import Settings

EVENTS_TOPIC = "notify.events"
MIGRATIONS = load("notify", "services.notify")


def build(settings: Settings) -> Service:
    return Service(
        "notify",
        settings,
        description="Acknowledgements and notices by email, webhook and SMS, each sent once.",
        publishes={EVENTS_TOPIC: []},
        migrations=MIGRATIONS,
    )

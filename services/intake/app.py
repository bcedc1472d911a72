"""Wiring of the intake service: what it consumes, produces and projects."""

from __future__ import annotations

from services.intake.events import PUBLISHES
from services.intake.handlers import Requests
from services.intake.settings import IntakeSettings
from services.intake.storage import TicketIndex
from services.policy import watch_policy
from shared.migrations import load
from shared.service import Service
from shared.settings import Settings

MIGRATIONS = load("intake", "services.intake")


def build(settings: Settings) -> Service:
    own = IntakeSettings.of(settings)
    return Service(
        "intake",
        own,
        port=own.intake_port,
        description="Requests from every channel in; numbered, recorded and triaged tickets out.",
        publishes=PUBLISHES,
        subscriptions=[Requests(watch_policy(own))],
        projections=[TicketIndex()],
        migrations=MIGRATIONS,
    )

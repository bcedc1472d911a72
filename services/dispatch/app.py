"""Wiring of the dispatch service: what it consumes, produces and projects."""

from __future__ import annotations

from services.dispatch.events import PUBLISHES
from services.dispatch.handlers import Commands, DeskSession, Events
from services.dispatch.settings import DispatchSettings
from services.dispatch.storage import AgentRoster, TicketBoard
from services.policy import watch_policy
from shared.keys import KeyRing
from shared.migrations import load
from shared.service import Service
from shared.settings import Settings

MIGRATIONS = load("dispatch", "services.dispatch")


def build(settings: Settings) -> Service:
    own = DispatchSettings.of(settings)
    session = DeskSession(watch_policy(own))
    return Service(
        "dispatch",
        own,
        port=own.dispatch_port,
        description="Classification matrix, routing to groups and agents, the ticket lifecycle.",
        publishes=PUBLISHES,
        subscriptions=[
            Events(session),
            Commands(session, KeyRing.from_settings(own), own.token_max_ttl),
        ],
        projections=[TicketBoard(), AgentRoster()],
        migrations=MIGRATIONS,
    )

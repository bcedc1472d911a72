"""Wiring of the dispatch service: what it consumes, produces and projects."""

from __future__ import annotations

from services.dispatch.closing import closing
from services.dispatch.events import MARKS_TOPIC, PUBLISHES
from services.dispatch.handlers import Commands, DeskSession, Events, policy_switch
from services.dispatch.settings import DispatchSettings
from services.dispatch.storage import AgentRoster, TicketBoard
from services.intake.events import MARKS_TOPIC as INTAKE_MARKS
from services.policy import policy_schedule
from shared.keys import KeyRing
from shared.keystore import KeyStore
from shared.migrations import load
from shared.service import Service
from shared.settings import Settings

MIGRATIONS = load("dispatch", "services.dispatch")


def build(settings: Settings) -> Service:
    own = DispatchSettings.of(settings)
    session = DeskSession(policy_schedule(own))
    keys = KeyStore(own)
    return Service(
        "dispatch",
        own,
        port=own.dispatch_port,
        description="Classification matrix, routing to groups and agents, the ticket lifecycle.",
        publishes=PUBLISHES,
        # sla fires a breach on an answer's absence: it waits until the answer is surely out.
        marks=MARKS_TOPIC,
        watches=[INTAKE_MARKS],  # its quiet tickets wait until intake's replies are read
        subscriptions=[
            Events(session, keys),
            Commands(session, KeyRing.from_settings(own), own.token_max_ttl),
        ],
        projections=[TicketBoard(), AgentRoster()],
        workers=[policy_switch(session), closing(session, own)],
        migrations=MIGRATIONS,
        # What people write about a ticket is its customer's personal data: sealed as recorded.
        key_store=keys,
    )

"""Wiring of the intake service: what it consumes, produces and projects."""

from __future__ import annotations

from services.intake.events import MARKS_TOPIC, PUBLISHES
from services.intake.follow_ups import FollowUps
from services.intake.handlers import Requests
from services.intake.retention import forgetting
from services.intake.settings import IntakeSettings
from services.intake.storage import TicketIndex
from services.policy import policy_schedule
from shared.keystore import KeyStore
from shared.migrations import load
from shared.policyfile import keep_in_force
from shared.service import Service
from shared.settings import Settings

MIGRATIONS = load("intake", "services.intake")


def build(settings: Settings) -> Service:
    own = IntakeSettings.of(settings)
    policy = policy_schedule(own)
    keys = KeyStore(own)
    return Service(
        "intake",
        own,
        port=own.intake_port,
        description="Requests from every channel in; numbered, recorded and triaged tickets out.",
        publishes=PUBLISHES,
        # dispatch resolves and closes quiet tickets on a reply's absence: it waits until every
        # reply recorded in time is surely out.
        marks=MARKS_TOPIC,
        subscriptions=[Requests(policy, keys), FollowUps(policy, keys)],
        projections=[TicketIndex()],
        workers=[keep_in_force(policy), forgetting(policy, keys, own.processed_purge_interval)],
        migrations=MIGRATIONS,
        key_store=keys,
        sealed_only=True,  # it seals every personal field it writes (customers.py)
    )

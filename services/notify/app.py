"""Wiring of the notify service: what it consumes, produces, its delivery worker and gauges."""

from __future__ import annotations

from services.notify.delivery import Deliverer
from services.notify.events import PUBLISHES
from services.notify.gauges import refresh_gauges
from services.notify.handlers import NoticeTriggers, Replays
from services.notify.settings import NotifySettings
from services.notify.survey import SurveyLinks
from services.policy import policy_schedule
from shared.keys import KeyRing
from shared.keystore import KeyStore
from shared.migrations import load
from shared.policyfile import keep_in_force
from shared.service import Service, every
from shared.settings import Settings

MIGRATIONS = load("notify", "services.notify")


def build(settings: Settings) -> Service:
    own = NotifySettings.of(settings)
    policy = policy_schedule(own)
    keys = KeyStore(own)
    deliverer = Deliverer(policy, own, keys)
    ring = KeyRing.from_settings(own)
    survey = SurveyLinks(
        own.notify_console_url,
        ring.issuer_of("customers"),
        own.token_max_ttl,
    )

    async def deliver_notices(service: Service) -> None:
        await deliverer.run(service)

    return Service(
        "notify",
        own,
        port=own.notify_port,
        description="Acknowledgements and notices by email, webhook and SMS, each sent once.",
        publishes=PUBLISHES,
        subscriptions=[
            NoticeTriggers(policy, survey, keys, deliverer.wake),
            Replays(ring, deliverer.wake),
        ],
        workers=[
            deliver_notices,
            every(own.notify_report_interval, refresh_gauges),
            keep_in_force(policy),
        ],
        migrations=MIGRATIONS,
        key_store=keys,  # the customer messages it publishes
    )

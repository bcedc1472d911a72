"""Wiring of the sla service: what it consumes, produces and projects, and its workers."""

from __future__ import annotations

from datetime import datetime

from services.dispatch.events import MARKS_TOPIC as DISPATCH_MARKS
from services.policy import policy_schedule
from services.policy.sla import DEFAULT_SATISFACTION, SatisfactionPolicy
from services.sla.events import PUBLISHES
from services.sla.handlers import LifecycleEvents
from services.sla.report import report_gauges
from services.sla.settings import SlaSettings
from services.sla.storage import ClockBoard
from services.sla.timers import timer_worker
from shared.migrations import load
from shared.policyfile import keep_in_force
from shared.service import Service, every
from shared.settings import Settings

MIGRATIONS = load("sla", "services.sla")


def build(settings: Settings) -> Service:
    own = SlaSettings.of(settings)
    policy = policy_schedule(own)

    def satisfaction(moment: datetime) -> SatisfactionPolicy:
        sla = policy.in_force(moment).policy.sla
        return sla.satisfaction if sla is not None else DEFAULT_SATISFACTION

    return Service(
        "sla",
        own,
        port=own.sla_port,
        description="Response-time clocks on business calendars, warnings, escalation ladder.",
        publishes=PUBLISHES,
        subscriptions=[LifecycleEvents(policy)],
        watches=[DISPATCH_MARKS],
        projections=[ClockBoard()],
        workers=[
            timer_worker(own),
            every(own.sla_report_interval, report_gauges(satisfaction)),
            keep_in_force(policy),
        ],
        migrations=MIGRATIONS,
    )

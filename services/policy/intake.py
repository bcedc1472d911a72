"""Policy section of intake itself: what it takes on trust from a channel adapter.

``received_at`` is when the channel says it received a request. It starts the SLA clocks and
tells the customer when to expect an answer, so it is bounded by intake's own clock: a request
received longer ago than ``max_past`` (an adapter replaying a backlog, a wrong clock, a forged
date) or later than ``max_future`` from now is refused with ``received_at_out_of_range``.
``retention`` is how long customers' personal data outlives their last closed ticket
(:mod:`services.intake.retention`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from shared.durations import Duration


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReceivedAtPolicy(_Section):
    max_past: Duration = Field(
        default=timedelta(days=7),
        gt=timedelta(0),
        le=timedelta(days=3650),
        description="Oldest a request's received_at may be, before intake's now.",
    )
    max_future: Duration = Field(
        default=timedelta(minutes=5),
        ge=timedelta(0),
        le=timedelta(days=1),
        description="How far after intake's now a received_at may be (clocks drift).",
    )

    def allows(self, received_at: datetime, now: datetime) -> bool:
        return now - self.max_past <= received_at <= now + self.max_future


class IntakePolicy(_Section):
    received_at: ReceivedAtPolicy = ReceivedAtPolicy()
    retention: Duration | None = Field(
        default=None,
        gt=timedelta(0),
        le=timedelta(days=36500),  # intake's now minus it must still be a date
        description="How long a customer's personal data is kept after their last ticket "
        "closed: then their data key is destroyed (as by `desk customer erase`) and intake's "
        "dead letters older than it are purged. None: kept until erased.",
    )

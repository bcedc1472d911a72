"""sla's settings: the kernel's, plus its HTTP port, its timer worker and its report gauges."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from shared.durations import PositiveDuration
from shared.settings import Settings


class SlaSettings(Settings):
    sla_port: int = Field(default=8103, description="HTTP port of sla.")
    sla_timer_interval: PositiveDuration = Field(
        default=timedelta(milliseconds=250),
        description="Longest the SLA timer worker sleeps between rounds (it wakes earlier for "
        "a timer due sooner).",
    )
    sla_timer_batch: int = Field(
        default=500, ge=1, description="Most clocks one timer round fires in one transaction."
    )
    sla_report_interval: PositiveDuration = Field(
        default=timedelta(seconds=15), description="How often the SLA report gauges refresh."
    )

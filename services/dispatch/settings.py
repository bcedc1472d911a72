"""dispatch's settings: the kernel's, plus its HTTP port and how often it closes tickets."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from shared.durations import PositiveDuration
from shared.settings import Settings


class DispatchSettings(Settings):
    dispatch_port: int = Field(default=8102, description="HTTP port of dispatch.")
    dispatch_close_interval: PositiveDuration = Field(
        default=timedelta(minutes=1),
        gt=timedelta(0),
        description="How often dispatch resolves the tickets past the policy's "
        "routing.resolve_unanswered_after and closes those past routing.close_after.",
    )

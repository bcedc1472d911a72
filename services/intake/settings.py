"""intake's settings: the kernel's, plus its HTTP port."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class IntakeSettings(Settings):
    intake_port: int = Field(default=8101, description="HTTP port of intake.")

"""dispatch's settings: the kernel's, plus its HTTP port."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class DispatchSettings(Settings):
    dispatch_port: int = Field(default=8102, description="HTTP port of dispatch.")

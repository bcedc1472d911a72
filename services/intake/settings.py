"""intake's settings: the kernel's, plus its HTTP port and those of its email channel adapter
(``desk adapter email``, which lives beside the contract it speaks)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class IntakeSettings(Settings):
    intake_port: int = Field(default=8101, description="HTTP port of intake.")
    email_adapter_host: str = Field(
        default="127.0.0.1", description="`desk adapter email`: interface the SMTP receiver binds."
    )
    email_adapter_port: int = Field(
        default=2525, description="`desk adapter email`: port of the SMTP receiver."
    )
    email_adapter_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="`desk adapter email`: largest mail accepted (announced as SMTP SIZE); a "
        "larger one is refused with 552 before it is read.",
    )

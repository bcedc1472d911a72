"""notify's settings: the kernel's, plus its HTTP port, its channels (SMTP, SMS, the signing
secret of webhooks) and its delivery worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from services.policy.notify import WebAddress
from shared.durations import PositiveDuration, format_duration
from shared.endpoints import EndpointRefused, EndpointRule, check_endpoint
from shared.settings import Settings


class NotifySettings(Settings):
    notify_port: int = Field(default=8104, description="HTTP port of notify.")
    smtp_host: str = Field(default="127.0.0.1", description="SMTP server for email notices.")
    smtp_port: int = Field(default=25, description="SMTP port (465 with tls, 587 with starttls).")
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        default="none", description="none, STARTTLS after connecting, or implicit TLS."
    )
    smtp_username: str | None = Field(default=None, description="SMTP login, if required.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    smtp_connections: int = Field(
        default=4, ge=1, le=64, description="SMTP connections notify keeps open and reuses."
    )
    notify_sms_endpoint: WebAddress | None = Field(
        default=None, description="HTTP endpoint of the SMS provider (same shape as webhooks)."
    )
    notify_sms_max_segments: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Longest text message, in segments (153 GSM characters, or 67 others, a "
        "segment): a longer one is cut with an ellipsis.",
    )
    notify_signing_secret: SecretStr = Field(
        default=SecretStr("local-development-secret"),
        description="HMAC-SHA256 key of webhook and SMS request signatures. Set it in production.",
    )
    notify_console_url: str = Field(
        default="http://127.0.0.1:8105",
        description="Public address of the console: the survey links of resolution notices "
        "point at its survey page (`desk up` sets it).",
    )
    notify_send_timeout: PositiveDuration = Field(
        default=timedelta(seconds=10), description="Longest one SMTP or HTTP send may take."
    )
    notify_max_attempts: int = Field(
        default=6, ge=1, description="Attempts at a notice before it is failed and dead-lettered."
    )
    notify_retry_backoff: PositiveDuration = Field(
        default=timedelta(seconds=2),
        description="First retry delay of a notice; doubles each attempt, with jitter.",
    )
    notify_retry_backoff_max: PositiveDuration = Field(
        default=timedelta(minutes=10), description="Longest retry delay of a notice."
    )
    notify_batch: int = Field(default=200, ge=1, description="Notices claimed per round.")
    notify_concurrency: int = Field(default=32, ge=1, description="Sends in flight at once.")
    notify_destination_concurrency: int = Field(
        default=12,
        ge=1,
        description="Sends in flight at once to one destination (the SMTP relay, the SMS "
        "provider, one webhook host): a receiver that holds sends up takes no more. The relay "
        "gets no more than DESK_SMTP_CONNECTIONS.",
    )
    notify_lease: PositiveDuration = Field(
        default=timedelta(minutes=1),
        description="A claimed notice not finished by then (its sender died) is sent again, "
        "with the same idempotency key.",
    )
    notify_interval: PositiveDuration = Field(
        default=timedelta(milliseconds=250), description="Longest the delivery worker idles."
    )

    @model_validator(mode="after")
    def _lease_outlasts_a_send(self) -> Self:
        # A lease ending while its send may still be answered lets the next claim send the
        # notice again although the receiver took it.
        if self.notify_lease <= self.notify_send_timeout:
            lease, timeout = (
                format_duration(d) for d in (self.notify_lease, self.notify_send_timeout)
            )
            raise ValueError(
                f"notify_lease ({lease}) must be longer than notify_send_timeout ({timeout}): "
                "a notice still being sent would go again"
            )
        return self

    @model_validator(mode="after")
    def _sms_endpoint_allowed(self) -> Self:
        if self.notify_sms_endpoint is not None:
            try:
                check_endpoint(self.notify_sms_endpoint, EndpointRule.of(self))
            except EndpointRefused as refused:
                raise ValueError(f"notify_sms_endpoint: {refused}") from None
        return self

    notify_report_interval: PositiveDuration = Field(
        default=timedelta(seconds=15),
        description="How often notify's gauges (notices pending, events waiting for a receipt) "
        "refresh.",
    )

"""console's settings: the kernel's, plus its HTTP port and the limits of its HTTP side (the
HTTP channel's ``POST /requests`` among them)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from shared.durations import PositiveDuration
from shared.settings import Settings


class ConsoleSettings(Settings):
    console_port: int = Field(default=8105, description="HTTP port of the console.")
    console_secure_cookie: bool | None = Field(
        default=None,
        description="Mark the sign-in cookie Secure (browsers send it over HTTPS only): the "
        "console serves plain HTTP behind a TLS proxy and cannot tell the browser's scheme. "
        "Unset: on, except in local mode (`desk up` serves http://127.0.0.1).",
    )
    console_max_body: int = Field(
        default=65_536,
        ge=1024,
        le=1_048_576,
        description="Largest request body the console reads, in bytes (larger: 413).",
    )
    console_stream_recheck: PositiveDuration = Field(
        default=timedelta(seconds=15),
        gt=timedelta(0),
        description="How often an open live stream (`/api/stream`) checks its caller again: "
        "a token expired meanwhile, or a person no longer in the directory, ends it "
        "(`signed_out`), and a change of their groups applies from then on.",
    )
    console_streams_per_caller: int = Field(
        default=8,
        ge=1,
        description="Live streams (`/api/stream`) one person may hold open at once (their desks "
        "and tabs); one more is answered 429: each holds a queue of up to 1,000 changes.",
    )
    console_command_wait: PositiveDuration = Field(
        default=timedelta(seconds=3),
        description="How long the survey page waits for dispatch's decision before saying the "
        "score is on its way.",
    )
    console_send_wait: PositiveDuration = Field(
        default=timedelta(seconds=5),
        gt=timedelta(0),
        description="How long a command or `POST /requests` waits for one of the console's "
        "sending slots (half of DESK_DB_POOL_MAX_SIZE; each holds a connection until the broker "
        "answers) before 503 with Retry-After: a slow broker cannot take the whole pool.",
    )
    console_requests_limit: int = Field(
        default=60,
        ge=1,
        description="`POST /requests`: requests one channel client (its token's subject) may send "
        "per console_requests_window; more are answered 429 with Retry-After.",
    )
    console_requests_window: PositiveDuration = Field(
        default=timedelta(minutes=1),
        gt=timedelta(0),
        description="`POST /requests`: the window console_requests_limit counts in ('1s', '1m').",
    )
    console_survey_limit: int = Field(
        default=5,
        ge=1,
        description="Survey page: scores that may be sent for one ticket per "
        "console_survey_window (each is a command to dispatch); more are answered 429.",
    )
    console_survey_window: PositiveDuration = Field(
        default=timedelta(minutes=10),
        gt=timedelta(0),
        description="Survey page: the window console_survey_limit counts in ('30s', '10m').",
    )
    console_idempotency_retention: PositiveDuration = Field(
        default=timedelta(days=7),
        gt=timedelta(0),
        description="`POST /requests`: how long an Idempotency-Key is remembered (then the same "
        "key is a new request); purged every DESK_PROCESSED_PURGE_INTERVAL.",
    )

    @property
    def secure_cookie(self) -> bool:
        """Whether the sign-in cookie is Secure: console_secure_cookie, else outside local mode."""
        if self.console_secure_cookie is not None:
            return self.console_secure_cookie
        return not self.local_mode

"""Tokens and signed commands in tests, made the way every producer of commands makes them
(:func:`shared.credentials.issue_token`, :func:`shared.credentials.sign_command`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.credentials import issue_token, sign_command
from shared.keys import KeyRing
from shared.settings import Settings

CUSTOMER_COMMANDS = ("record_satisfaction", "reopen")


def token(
    settings: Settings,
    actor: str,
    *,
    ticket: str | None = None,
    commands: tuple[str, ...] = CUSTOMER_COMMANDS,
    ttl: timedelta = timedelta(hours=1),
    now: datetime | None = None,
    issuer: str | None = None,
) -> str:
    """A token for ``actor`` from the test ring's issuer that vouches for it (or ``issuer``)."""
    ring = KeyRing.from_settings(settings)
    if issuer is not None:
        key = ring.signing_key(issuer)
    else:
        vouch = {"system": "system", "customer": "customers"}.get(actor, "agents")
        key = ring.issuer_of(vouch)  # type: ignore[arg-type]
    assert key is not None, f"no key for {actor}"
    return issue_token(
        key,
        actor,
        now=now or datetime.now(UTC),
        ttl=ttl,
        ticket=ticket if actor == "customer" else None,
        commands=commands if actor == "customer" else (),
    )


def signed(
    settings: Settings, body: dict[str, Any], *, token_: str | None = None
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The record value and headers of a command signed for its ``actor`` (or with ``token_``)."""
    value = json.dumps(body).encode()
    if token_ is None:
        actor = body["actor"]
        token_ = token(settings, actor, ticket=body.get("ticket_number"))
    return value, sign_command(token_, value)

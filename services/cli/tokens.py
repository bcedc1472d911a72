"""``desk token issue``: a token an agent's desk (a customer's link, a channel client posting
requests) acts with; ``desk keys generate``: a fresh key ring for a deployment."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from services import key_issuers
from services.cli.context import console, fail, load_settings
from services.policy import policy_path, policy_schedule
from services.vocabulary import CUSTOMER_COMMANDS
from shared.credentials import CHANNEL_PREFIX, issue_token
from shared.durations import format_duration, parse_duration
from shared.keys import KeyRing, KeyRingError
from shared.settings import Settings

app = typer.Typer(
    help="Tokens for people: agents' desks, customers' links, channel clients.",
    no_args_is_help=True,
)
keys_app = typer.Typer(help="The key ring of the issuers servicedesk trusts.", no_args_is_help=True)


@app.command()
def issue(
    actor: Annotated[
        str,
        typer.Argument(
            help="An agent or operator id of the directory, 'customer', or 'channel:NAME' (a "
            "web form or API client posting requests to the console's POST /requests)."
        ),
    ],
    ttl: Annotated[str, typer.Option(help="How long it is valid: 8h, 30m, 7d.")] = "8h",
    ticket: Annotated[
        str | None, typer.Option(help="customer only: the one ticket number it acts on.")
    ] = None,
    command: Annotated[
        list[str] | None,
        typer.Option(
            help="customer only: a command type it allows (repeatable).", show_default=False
        ),
    ] = None,
) -> None:
    """Print a token for an agent or a channel client (signed with the operators' key) or for
    the customer of one ticket (with the key that vouches for customers). `system` is the
    services' own."""
    settings = load_settings()
    try:
        lifetime = parse_duration(ttl)
        ring = KeyRing.from_settings(settings)
    except (ValueError, KeyRingError) as error:
        raise fail(str(error)) from None
    if lifetime <= timedelta(0):
        raise fail("--ttl must be longer than zero: a token valid for no time is of no use")
    if lifetime > settings.token_max_ttl:
        raise fail(
            f"--ttl is longer than DESK_TOKEN_MAX_TTL ({format_duration(settings.token_max_ttl)})"
        )
    if actor == "system":
        raise fail("`system` acts only with a service's own key, never with a person's token")
    if actor == "customer":
        if ticket is None:
            raise fail("a customer token needs --ticket (the one ticket it acts on)")
        key = ring.issuer_of("customers")
    else:
        if ticket is not None or command:
            raise fail("--ticket and --command are for customer tokens")
        if actor.startswith(CHANNEL_PREFIX):
            if not _CHANNEL_NAME.match(actor.removeprefix(CHANNEL_PREFIX)):
                raise fail("a channel client is channel:NAME (letters, digits, . _ -; 1-60)")
        elif not _known_person(settings, actor):
            raise fail(
                f"{actor} is not an agent or operator of the directory ({policy_path(settings)})"
            )
        key = ring.issuer_of("agents")
    if key is None:
        raise fail("no key may sign that token: set DESK_KEYS_FILE (or run `desk up`)")
    token = issue_token(
        key,
        actor,
        now=datetime.now(UTC),
        ttl=lifetime,
        ticket=ticket,
        commands=command or list(CUSTOMER_COMMANDS),
    )
    console.print(token, markup=False, highlight=False, soft_wrap=True)


_CHANNEL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,60}$")


def _known_person(settings: Settings, actor: str) -> bool:
    """Whether the version in force, or one to come, names ``actor`` as an agent or operator in
    its directory (a token may outlive a version switch)."""
    schedule = policy_schedule(settings)
    current = schedule.in_force(datetime.now(UTC))
    return any(
        actor in v.policy.directory.agent or actor in {o.id for o in v.policy.directory.operators}
        for v in schedule.versions()
        if v.starts >= current.starts
    )


@keys_app.command()
def generate() -> None:
    """Print a fresh key ring (JSON for DESK_KEYS or DESK_KEYS_FILE): a key for the operators'
    tool and for each service, 32 random bytes each."""
    console.print(KeyRing.generate(key_issuers()).dump(), markup=False, highlight=False)

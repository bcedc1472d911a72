"""``desk customer``: the data subject's rights over what servicedesk holds about them.

``erase REF`` destroys the customer's data key (crypto-shredding, :mod:`shared.keystore`) and
records ``servicedesk.customer.erased``: every personal field sealed under the pseudonym — in
every event store, on every topic, in dead letters and backups — is unreadable from then on,
while the tickets and their timelines stay whole, "erased" where the personal data was.
``export REF`` writes everything held about the customer as JSON (the right of access): every
event of every service's store that carries the pseudonym, the notices about them and the dead
letters sealed under them, opened. ``find``
gives the pseudonym of a customer id, e-mail address or phone number.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from services import service_names
from services.cli.context import connected, console, database_settings, fail, run_async
from services.intake import queries as intake
from services.notify import queries as notify
from shared.clock import service_now
from shared.keystore import KEY_HOLDER, KeyStore, MasterKeys

app = typer.Typer(help="Customers' personal data: erase it, export it.", no_args_is_help=True)

Ref = Annotated[str, typer.Argument(help="The customer's pseudonym, e.g. cust-3f9a0c1d2e4b5a69.")]


@app.command()
def erase(
    ref: Ref,
    reason: Annotated[str, typer.Option(help="Why (recorded with the erasure).")] = "",
) -> None:
    """Destroy the customer's data key and record the erasure; exits 1 when the pseudonym is
    unknown or already erased."""
    settings = database_settings()
    keys = KeyStore(MasterKeys.from_settings(settings))

    async def go() -> bool:
        async with connected(settings) as conn, conn.transaction():
            now = await service_now(conn, KEY_HOLDER, driven=settings.clock == "driven")
            by = os.environ.get("USER", "desk")
            return await intake.erase_customer(conn, keys, ref, now, by=by, reason=reason)

    if not run_async(go()):
        raise fail(f"no customer {ref} holding a key (unknown, or erased before)")
    console.print(f"{ref}: data key destroyed; its personal data reads 'erased' everywhere")


@app.command()
def export(ref: Ref) -> None:
    """Print everything held about the customer as JSON: the key's record, every event
    carrying the pseudonym, every notice about them and every dead letter sealed under them,
    personal fields opened."""
    settings = database_settings()
    keys = KeyStore(MasterKeys.from_settings(settings))

    async def go() -> dict[str, Any] | None:
        async with connected(settings) as conn:
            found = await intake.customer_data(conn, keys, ref, service_names())
            if found is not None:
                found["notices"] = await notify.customer_notices(conn, keys, ref)
            return found

    found = run_async(go())
    if found is None:
        raise fail(f"no customer {ref}")
    typer.echo(json.dumps(found, ensure_ascii=False, indent=2, default=str))


@app.command()
def find(
    customer_id: Annotated[str | None, typer.Option(help="The adapter's customer id.")] = None,
    email: Annotated[str | None, typer.Option(help="An e-mail address.")] = None,
    phone: Annotated[str | None, typer.Option(help="A phone number (as +8613800001234).")] = None,
) -> None:
    """Print the pseudonym of the customer the given id, e-mail address or phone number names,
    read as intake reads them: an address in capitals or another Unicode form, a phone number
    with spaces or dashes, an id with spaces around it are the customer intake recorded — not
    "no such customer", which would close a request for access or erasure that should not be
    closed. intake files a customer under one identifier, the first of id, address and phone
    its request carried: a customer who wrote with an address and a phone is found by the
    address. Given several, each is looked up and printed as ``--OPTION REF`` (or ``not
    found``); exit 1 when none is found."""
    try:
        identities = intake.identities(customer_id=customer_id, email=email, phone=phone)
    except ValueError as error:
        raise fail(str(error)) from None
    if not identities:
        raise fail("name a customer: --customer-id, --email or --phone")
    settings = database_settings()
    keys = KeyStore(MasterKeys.from_settings(settings))

    async def go() -> dict[str, str | None]:
        async with connected(settings) as conn:
            return {
                f"--{field.replace('_', '-')}": await keys.find(conn, identity)
                for field, identity in identities.items()
            }

    found = run_async(go())
    if not any(found.values()):
        raise fail("no such customer (never seen, or erased)")
    if len(found) == 1:
        typer.echo(next(iter(found.values())))
    else:
        typer.echo("\n".join(f"{o} {ref or 'not found'}" for o, ref in found.items()))

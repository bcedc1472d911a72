"""``desk master-key``: rotate the master key that wraps every customer's data key.

The new key becomes ``DESK_MASTER_KEY`` and the old one joins ``DESK_MASTER_KEYS_RETIRED`` on
every service; ``rotate`` then rewraps what is still under a retired key
(:mod:`shared.rotation`), and ``status`` says when nothing is left under one, so the retired key
can be dropped. Both print JSON, for the operator's scripts as much as for their eyes.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from services.cli.context import connected, database_settings, fail, run_async
from shared.keystore import KeyStore, MasterKeyError
from shared.rotation import ROTATION_BATCH, census, rotate_keys, rotate_lookup_secret

app = typer.Typer(
    help="The master key wrapping customers' data keys: rotate it, see what it wraps.",
    no_args_is_help=True,
)


@app.command()
def rotate(
    batch: Annotated[
        int, typer.Option(min=1, help="Rows rewrapped per transaction.")
    ] = ROTATION_BATCH,
) -> None:
    """Rewrap every data key (and the lookup secret) still under a retired master key under the
    current one; run again after an interruption. Exits 1 while something is left under a
    retired key (rows another transaction held, or made by a service still on the old key)."""
    settings = database_settings()
    store = KeyStore(settings)

    async def go() -> dict[str, Any]:
        async with connected(settings) as conn:
            lookup = await rotate_lookup_secret(store, conn)
            batches = [n async for n in rotate_keys(store, conn, batch)]
            left = await census(store, conn)
        return {
            "rewrapped": sum(batches),
            "batches": len(batches),
            "lookup_secret_rewrapped": lookup,
            **left.as_json(),
        }

    try:
        done = run_async(go())
    except MasterKeyError as error:
        raise fail(str(error)) from None
    typer.echo(json.dumps(done, indent=2))
    if not done["rotated"]:
        raise fail("some keys are still under a retired master key: run `desk master-key rotate`")


@app.command()
def status() -> None:
    """Data keys per master key, erased ones, and whether all are under the current key
    (``"rotated": true``: the retired keys may be dropped)."""
    settings = database_settings()
    try:
        store = KeyStore(settings)
        store.ring  # noqa: B018 - a bad key is reported before connecting

        async def go() -> dict[str, Any]:
            async with connected(settings) as conn:
                return (await census(store, conn)).as_json()

        typer.echo(json.dumps(run_async(go()), indent=2))
    except MasterKeyError as error:
        raise fail(str(error)) from None

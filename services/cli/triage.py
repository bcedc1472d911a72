"""``desk triage review``: each triage rule against agents' corrections (``reclassify``)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from services.cli.context import (
    MAX_DAYS,
    connected,
    console,
    database_settings,
    plain_row,
    run_async,
)
from services.dispatch import queries as dispatch
from services.intake import queries as intake
from shared.clock import service_now
from shared.keystore import KeyStore, MasterKeys

app = typer.Typer(help="Triage: how its rules fare.", no_args_is_help=True)


@app.command()
def review(
    days: Annotated[
        int, typer.Option(help="Tickets triaged in the last N days.", min=1, max=MAX_DAYS)
    ] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Per rule: tickets it decided, how many agents corrected (and to what), and the words
    most frequent in the corrected ones."""
    settings = database_settings()

    async def go() -> list[intake.RuleReview]:
        async with connected(settings) as conn:
            now = await service_now(conn, "intake", driven=settings.clock == "driven")
            since = now - timedelta(days=days)
            corrections = {
                c.ticket_id: f"{c.to_complexity} {c.to_category}"
                for c in await dispatch.reclassifications(conn, since)
            }
            keys = KeyStore(MasterKeys.from_settings(settings))
            return await intake.triage_review(conn, since, corrections, keys)

    rules = run_async(go())
    if as_json:
        body = [
            {
                "rule": r.rule,
                "hits": r.hits,
                "corrected": r.corrected,
                "correction_rate": r.correction_rate,
                "corrected_to": dict(r.corrected_to),
                "words": r.frequent(),
            }
            for r in rules
        ]
        typer.echo(json.dumps({"days": days, "rules": body}, ensure_ascii=False))
        return
    table = Table(title=f"triage rules, tickets of the last {days} days")
    for column in ("rule", "hits", "corrected", "rate", "corrected to", "frequent words"):
        table.add_column(column, overflow="fold")
    for r in rules:
        plain_row(
            table,
            r.rule,
            str(r.hits),
            str(r.corrected),
            f"{r.correction_rate:.0%}",
            ", ".join(f"{k} ({n})" for k, n in r.corrected_to.most_common()),
            ", ".join(f"{w} ({n})" for w, n in r.frequent()),
        )
    console.print(table)

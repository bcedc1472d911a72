"""``desk sla report``: SLA compliance, mean times, tickets at risk and CSAT, as sla reports
them."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from services.cli.context import console, fail, load_settings, run_async
from services.policy import Policy, policy_path
from services.policy.sla import SatisfactionPolicy
from services.sla import queries as sla
from shared.database import connect
from shared.policyfile import load_policy

app = typer.Typer(help="Service levels: how the desk keeps its targets.", no_args_is_help=True)


@app.command()
def report(
    days: Annotated[int, typer.Option(help="Outcomes of the last N days.", min=1)] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Compliance per metric, group and day; mean first-response and handling time; at risk;
    CSAT per day and group against the policy's target."""
    settings = load_settings()
    if not settings.database_url:
        raise fail("DATABASE_URL is not set and no `desk up` is running")
    terms = load_policy(policy_path(settings), Policy)[0].sla
    satisfaction = terms.satisfaction if terms is not None else SatisfactionPolicy()

    async def go() -> sla.SlaReport | None:
        conn = await connect(settings.require_database_url())
        try:
            since = datetime.now(UTC) - timedelta(days=days)
            return await sla.report(conn, since, satisfaction)
        finally:
            await conn.close()

    result = run_async(go())
    if result is None:
        raise fail("the sla service has not created its tables yet (desk migrate sla)")
    if as_json:
        body = dataclasses.asdict(result)
        body["compliance"] = [
            {**dataclasses.asdict(c), "ratio": c.ratio} for c in result.compliance
        ]
        below = result.below_target()
        body["csat"] = [
            {**dataclasses.asdict(c), "ratio": c.ratio, "below_target": c in below}
            for c in result.csat
        ]
        typer.echo(json.dumps(body, default=str, ensure_ascii=False))
        return
    table = Table(title=f"SLA compliance since {result.since:%Y-%m-%d %H:%M} UTC")
    for column in ("day", "metric", "group", "met", "breached", "compliance"):
        table.add_column(column)
    for c in result.compliance:
        ratio = "-" if c.ratio is None else f"{c.ratio:.1%}"
        table.add_row(c.day, c.metric, c.group_id, str(c.met), str(c.breached), ratio)
    console.print(table)
    console.print(f"mean time to first response: {_duration(result.mean_first_response_s)}")
    console.print(
        f"mean handling time (receipt to resolution): {_duration(result.mean_handling_s)}"
    )
    console.print(
        f"open tickets at risk (warned): {result.tickets_at_risk}; "
        f"breached and still open: {result.tickets_breached_open}"
    )
    if result.at_risk:
        risky = Table(title="clocks at risk, soonest deadline first")
        for column in ("ticket", "metric", "group", "status", "used", "deadline"):
            risky.add_column(column)
        for r in result.at_risk:
            deadline = f"{r.deadline:%Y-%m-%d %H:%M}" if r.deadline else "-"
            risky.add_row(r.number, r.metric, r.group_id, r.status, f"{r.warned:.0%}", deadline)
        console.print(risky)
    _csat(result)


def _csat(result: sla.SlaReport) -> None:
    """CSAT per day and group, with a warning where it is under the policy's target."""
    table = Table(title=f"CSAT (share of satisfied scores), target {result.csat_target:.0%}")
    for column in ("day", "group", "satisfied", "rated", "CSAT"):
        table.add_column(column)
    below = result.below_target()
    for c in result.csat:
        ratio = "-" if c.ratio is None else f"{c.ratio:.1%}"
        if c in below:
            ratio = f"[bold red]{ratio} below target[/]"
        table.add_row(c.day, c.group_id, str(c.satisfied), str(c.rated), ratio)
    console.print(table)
    if not result.csat:
        console.print("no survey answers in this period")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"

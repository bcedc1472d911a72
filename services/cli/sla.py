"""``desk sla report``: SLA compliance, mean times, tickets at risk and CSAT, as sla reports
them; ``desk sla what-if``: the same compliance figures had a proposed policy been in force."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from services.cli.context import (
    MAX_DAYS,
    connected,
    console,
    database_settings,
    fail,
    plain_row,
    run_async,
)
from services.dispatch import queries as dispatch
from services.policy import Policy, policy_schedule
from services.policy.sla import DEFAULT_SATISFACTION
from services.sla import queries as sla
from shared.policyfile import PolicyError, load_policy

app = typer.Typer(help="Service levels: how the desk keeps its targets.", no_args_is_help=True)


@app.command()
def report(
    days: Annotated[
        int, typer.Option(help="Outcomes of the last N days.", min=1, max=MAX_DAYS)
    ] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Compliance per metric, group and day; mean first-response and handling time; at risk;
    CSAT per day and group against the target of the policy in force."""
    settings = database_settings()
    schedule = policy_schedule(settings)

    async def go() -> sla.SlaReport | None:
        async with connected(settings) as conn:
            now = await sla.now(conn, driven=settings.clock == "driven")
            terms = schedule.in_force(now).policy.sla
            satisfaction = terms.satisfaction if terms is not None else DEFAULT_SATISFACTION
            return await sla.report(conn, now - timedelta(days=days), satisfaction)

    result = run_async(go())
    if result is None:
        raise fail("the sla service has not created its tables yet (desk migrate sla)")
    if as_json:
        body = dataclasses.asdict(result)
        body["compliance"] = [_compliance(c) for c in result.compliance]
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
        plain_row(table, c.day, c.metric, c.group_id, str(c.met), str(c.breached), ratio)
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
            plain_row(risky, r.number, r.metric, r.group_id, r.status, f"{r.warned:.0%}", deadline)
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
        shown = Text(f"{ratio} below target", style="bold red") if c in below else Text(ratio)
        plain_row(table, c.day, c.group_id, str(c.satisfied), str(c.rated), shown)
    console.print(table)
    if not result.csat:
        console.print("no survey answers in this period")


@app.command("what-if")
def what_if(
    proposed: Annotated[Path, typer.Argument(help="The proposed policy YAML.")],
    days: Annotated[
        int, typer.Option(help="Outcomes of the last N days.", min=1, max=MAX_DAYS)
    ] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Compliance per metric, group and day had PROPOSED been in force, beside the actual
    figures, and the clocks whose outcome would change. Replays stored events; writes nothing."""
    try:
        policy, version = load_policy(proposed, Policy)
    except (OSError, PolicyError) as error:
        raise fail(str(error), 2) from None
    settings = database_settings()

    async def go() -> sla.WhatIf | None:
        async with connected(settings) as conn:
            now = await sla.now(conn, driven=settings.clock == "driven")
            return await sla.what_if(
                conn,
                policy,
                version,
                since=now - timedelta(days=days),
                until=now,
                stories=partial(dispatch.ticket_stories, conn),
            )

    result = run_async(go())
    if result is None:
        raise fail("the sla service has not created its tables yet (desk migrate sla)")
    if as_json:
        body = dataclasses.asdict(result)
        body["comparison"] = [
            {
                "day": side.day,
                "metric": side.metric,
                "group_id": side.group_id,
                "actual": _compliance(side.actual),
                "proposed": _compliance(side.proposed),
            }
            for side in result.comparison
        ]
        typer.echo(json.dumps(body, default=str, ensure_ascii=False))
        return
    table = Table(
        title=f"SLA compliance since {result.since:%Y-%m-%d %H:%M} UTC: actual | proposed"
    )
    for column in (
        "day",
        "metric",
        "group",
        "actual met/breached",
        "actual",
        "proposed met/breached",
        "proposed",
    ):
        table.add_column(column)
    for side in result.comparison:
        plain_row(
            table,
            side.day,
            side.metric,
            side.group_id,
            *_figures(side.actual),
            *_figures(side.proposed),
        )
    console.print(table)
    if result.changes:
        changed = Table(title=f"clocks whose outcome would change ({len(result.changes)})")
        for column in ("ticket", "metric", "group", "actual", "proposed", "why"):
            changed.add_column(column, overflow="fold")
        for c in result.changes:
            plain_row(changed, c.number, c.metric, c.group_id, c.actual, c.proposed, c.why)
        console.print(changed)
    else:
        console.print("no clock would change its outcome")
    console.print(
        f"replayed {result.tickets} tickets ({result.clocks} clocks) under "
        f"{result.proposed_version} in {result.seconds:.1f} s; nothing was written or published"
    )


def _compliance(c: sla.Compliance | None) -> dict[str, Any] | None:
    return None if c is None else {**dataclasses.asdict(c), "ratio": c.ratio}


def _figures(c: sla.Compliance | None) -> tuple[str, str]:
    if c is None:
        return "-", "-"
    return f"{c.met}/{c.breached}", "-" if c.ratio is None else f"{c.ratio:.1%}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"

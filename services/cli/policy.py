"""``desk policy``: check a policy file, see what a change does, apply it, and its history.

``check`` validates a file the way every service will at start (and scores the triage rules on
labelled requests). ``diff`` compares a proposed file with the version in force: targets,
calendars, routing, groups and agents, and the open tickets and running clocks it touches;
it refuses a version that would strand tickets. ``apply`` writes an accepted version into the
policy directory, where services pick it up and switch to it at its ``effective_from``.
``history`` lists the versions each service put in force, and those still to come.
"""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from services import service_names
from services.cli.context import connected, console, fail, load_settings, plain_row, run_async
from services.dispatch import queries as dispatch
from services.policy import DEFAULT_POLICY, Policy, endpoints_allowed, policy_path, policy_schedule
from services.policy.changes import Removal, removals, sections, sign_off_refusals
from services.policy.triage_cases import TriageCases, score
from services.sla import queries as sla
from shared.clock import service_now
from shared.policyfile import (
    Adoption,
    PolicyError,
    PolicyVersion,
    adoptions,
    load_policy,
    parse_policy,
    read_policy_file,
)
from shared.settings import Settings

app = typer.Typer(help="The system's policy file.", no_args_is_help=True)


@app.command()
def check(
    file: Annotated[
        Path, typer.Argument(help="Policy YAML to check (default: the shipped one).")
    ] = DEFAULT_POLICY,
    triage_cases: Annotated[
        Path | None,
        typer.Option(help="Labelled requests: report triage accuracy per complexity class."),
    ] = None,
    require: Annotated[
        float | None,
        typer.Option(help="With --triage-cases: exit 1 if a class scores below this (0.9)."),
    ] = None,
) -> None:
    """Validate a policy file; print its version, or each problem with its line and field."""
    policy, version = _load(file)
    console.print(f"[green]{file}: valid[/] (version {version})")
    languages = ", ".join(policy.triage.languages)
    console.print(f"  triage: {len(policy.triage.rules)} rules, languages {languages}")
    if policy.approved_by is None or policy.effective_from is None:
        console.print(
            "  note: no approved_by / effective_from: in force as soon as read, and "
            "`desk policy apply` refuses it"
        )
    if triage_cases is not None:
        _score_triage(policy, triage_cases, require)


def _score_triage(policy: Policy, path: Path, require: float | None) -> None:
    try:
        cases = parse_policy(read_policy_file(path), TriageCases, source=str(path))
    except (OSError, PolicyError) as error:
        problems = error.problems if isinstance(error, PolicyError) else [str(error)]
        console.print(f"[bold red]{path} is not a set of triage cases:[/]")
        for problem in problems:
            console.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    scores = score(policy.triage, cases)
    table = Table(title=f"triage accuracy on {path.name} ({len(cases.cases)} requests)")
    for column in ("complexity", "right", "of", "accuracy"):
        table.add_column(column)
    for s in scores:
        plain_row(table, s.complexity, str(s.right), str(s.total), f"{s.accuracy:.1%}")
    console.print(table)
    for s in scores:
        for case, judged in s.misses:
            console.print(
                f"  {s.complexity} judged {judged.complexity} by {judged.rule}: "
                f"{case.subject} — {case.description[:70]}",
                markup=False,
                highlight=False,
            )
    below = [s for s in scores if require is not None and s.accuracy < require]
    if below and require is not None:
        names = ", ".join(s.complexity for s in below)
        console.print(f"[bold red]{names} below {require:.1%}[/]")
        raise typer.Exit(1)


@app.command()
def diff(
    proposed: Annotated[Path, typer.Argument(help="The proposed policy YAML.")],
) -> None:
    """What PROPOSED changes against the version in force, and what it touches now. Exit code
    1 if it would be refused (a removed group still holding tickets or on the ladder)."""
    settings = load_settings()
    new, version = _load(proposed)
    current, refused = _review(settings, new)
    if refused:
        raise typer.Exit(1)
    console.print(f"[green]{proposed} ({version}) can replace {current.version}[/]")


@app.command()
def apply(
    proposed: Annotated[Path, typer.Argument(help="The proposed policy YAML.")],
) -> None:
    """Check PROPOSED as ``diff`` does and, unless refused, put it in the policy directory
    (``DESK_POLICY_FILE``): services switch to it at its effective_from."""
    settings = load_settings()
    new, version = _load(proposed)
    target = policy_path(settings)
    if settings.policy_file is None:
        raise fail("DESK_POLICY_FILE is not set: the shipped default policy cannot be changed")
    _, refused = _review(settings, new)
    if refused:
        raise fail("refused; nothing was applied")
    if target.is_dir():
        when = new.effective_from.strftime("%Y%m%dT%H%M%S%z") if new.effective_from else "0"
        destination = target / f"{when}-{version.removeprefix('sha256:')}.yaml"
        shutil.copyfile(proposed, destination.with_suffix(".part"))
        destination.with_suffix(".part").rename(destination)  # services never read half a file
    else:
        now = run_async(_now(settings))
        if new.effective_from is not None and new.effective_from > now:
            raise fail(
                f"{target} is one file: a version effective in the future needs a policy "
                "directory (set DESK_POLICY_FILE to a directory holding the versions)"
            )
        destination = target
        shutil.copyfile(proposed, target.with_suffix(".part"))
        target.with_suffix(".part").rename(target)
    console.print(f"[green]applied[/] {version} as {destination}")


def _review(settings: Settings, new: Policy) -> tuple[PolicyVersion[Policy], bool]:
    """Print what ``new`` changes and touches; return the version in force and whether the
    change is refused."""
    current, tickets, clocks, now = run_async(_state(settings, new))
    for section in sections(current.policy, new):
        console.print(f"[bold]{section.title}[/]")
        for line in section.lines:
            console.print(f"  {line}", markup=False, highlight=False)
    gone = removals(current.policy, new, tickets or {})
    refusals = sign_off_refusals(current.policy, new, now)
    refusals += [r.refused for r in gone if r.refused]
    if tickets is None:
        refusals += [
            f"group {r.group_id} is removed and its open tickets cannot be counted (no "
            "database): map it with moved_to"
            for r in gone
            if r.moved_to is None and not r.refused
        ]
    _print_touched(gone, tickets, clocks)
    for refusal in refusals:
        console.print(f"[bold red]refused:[/] {refusal}", highlight=False)
    return current, bool(refusals)


def _print_touched(
    gone: list[Removal],
    tickets: dict[str, Counter[str]] | None,
    clocks: list[sla.RunningClocks] | None,
) -> None:
    console.print("[bold]open tickets and running clocks[/]")
    if tickets is None or clocks is None:
        console.print("  not counted: no database (DATABASE_URL unset and no `desk up`)")
        return
    for removal in gone:
        held = sum(removal.tickets.values())
        queued = removal.tickets.get("queued", 0)
        where = f"re-routed to {removal.moved_to}" if removal.moved_to else "stranded"
        console.print(f"  group {removal.group_id}: {held} open ({queued} queued) — {where}")
    for c in clocks:
        console.print(
            f"  {c.metric}: {c.running} clocks running; {c.other_terms} would start with other "
            "terms under the proposal — running clocks keep the terms they started with"
        )
    if not gone and not clocks:
        console.print("  none")


async def _state(
    settings: Settings, new: Policy
) -> tuple[
    PolicyVersion[Policy], dict[str, Counter[str]] | None, list[sla.RunningClocks] | None, datetime
]:
    """The version in force, open tickets per group, running clocks and now (dispatch's
    clock, which decides when versions switch); no counts without a database."""
    schedule = policy_schedule(settings)
    if not settings.database_url:
        now = datetime.now().astimezone()
        return schedule.in_force(now), None, None, now
    async with connected(settings) as conn:
        now = await service_now(conn, "dispatch", driven=settings.clock == "driven")
        tickets = await dispatch.tickets_per_group(conn)
        clocks = await sla.running_clocks(conn, new.sla)
    return schedule.in_force(now), tickets, clocks, now


async def _now(settings: Settings) -> datetime:
    if not settings.database_url:
        return datetime.now().astimezone()
    async with connected(settings) as conn:
        return await service_now(conn, "dispatch", driven=settings.clock == "driven")


@app.command()
def history() -> None:
    """The versions each service put in force (approver, effective from, when it switched),
    then the versions still to come."""
    settings = load_settings()
    schedule = policy_schedule(settings)

    async def go() -> tuple[datetime, dict[str, list[Adoption]]]:
        if not settings.database_url:
            return datetime.now().astimezone(), {}
        async with connected(settings) as conn:
            now = await service_now(conn, "dispatch", driven=settings.clock == "driven")
            return now, {name: await adoptions(conn, name) for name in service_names()}

    now, found = run_async(go())
    table = Table(title="policy versions put in force")
    for column in ("version", "approved by", "effective from", *found):
        table.add_column(column)
    versions: dict[str, Adoption] = {}
    for rows in found.values():
        for row in rows:
            versions.setdefault(row.version, row)
    for v in sorted(versions.values(), key=lambda a: a.loaded_at):
        loaded = {
            name: next((r.loaded_at for r in rows if r.version == v.version), None)
            for name, rows in found.items()
        }
        plain_row(
            table,
            v.version,
            v.approved_by or "-",
            _when(v.effective_from),
            *(_when(at) if at else "-" for at in loaded.values()),
        )
    console.print(table)
    pending = [p for p in schedule.versions() if p.effective_from and p.effective_from > now]
    if not pending:
        console.print("no version pending")
    for p in pending:
        console.print(
            f"pending: {p.version} approved by {p.approved_by or '-'}, effective "
            f"{_when(p.effective_from)} ({p.source})",
            highlight=False,
        )


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "from the start"


def _load(file: Path) -> tuple[Policy, str]:
    """Read a policy file as every service will (its webhook addresses checked too)."""
    try:
        return load_policy(file, Policy, endpoints_allowed(load_settings()))
    except FileNotFoundError:
        console.print(f"[bold red]{file}: no such file[/]")
        raise typer.Exit(2) from None
    except PolicyError as error:
        console.print(f"[bold red]{file} is not a valid policy:[/]")
        for problem in error.problems:
            console.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(1) from None

"""``desk policy check FILE``: validate a policy file the way every service will at start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.cli.context import console, load_settings
from services.policy import DEFAULT_POLICY, Policy, endpoints_allowed
from shared.policyfile import PolicyError, load_policy

app = typer.Typer(help="The system's policy file.", no_args_is_help=True)


@app.command()
def check(
    file: Annotated[
        Path, typer.Argument(help="Policy YAML to check (default: the shipped one).")
    ] = DEFAULT_POLICY,
) -> None:
    """Validate a policy file; print its version, or each problem with its line and field."""
    try:
        policy, version = load_policy(file, Policy, endpoints_allowed(load_settings()))
    except FileNotFoundError:
        console.print(f"[bold red]{file}: no such file[/]")
        raise typer.Exit(2) from None
    except PolicyError as error:
        console.print(f"[bold red]{file} is not a valid policy:[/]")
        for problem in error.problems:
            console.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    console.print(f"[green]{file}: valid[/] (version {version})")
    languages = ", ".join(policy.triage.languages)
    console.print(f"  triage: {len(policy.triage.rules)} rules, languages {languages}")

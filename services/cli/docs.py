"""Documentation generated from code: ``desk config`` and ``desk schemas``.

The README's configuration table and ``docs/events/*.json`` are written by these commands, and
tests fail when the committed files differ from what the code would write now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from services.cli.context import console
from shared.settings import Settings, env_name

EVENTS_DIR = Path("docs/events")


def register(app: typer.Typer) -> None:
    app.command()(config)
    app.command()(schemas)


def settings_table() -> str:
    """Markdown table of every setting: environment variable, default, meaning."""
    lines = ["| environment variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if default is None:
            shown = "(unset)"
        elif isinstance(default, bool):
            shown = "true" if default else "false"
        else:
            from datetime import timedelta

            from shared.durations import format_duration

            shown = format_duration(default) if isinstance(default, timedelta) else str(default)
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{env_name(name, field)}` | `{shown}` | {description} |")
    return "\n".join(lines) + "\n"


def event_schemas() -> dict[str, str]:
    """File name -> JSON Schema text for every public event of every service."""
    from services.events import load_all_events
    from shared.events import EVENTS

    load_all_events()
    return {
        f"{cls.event_type()}.json": json.dumps(
            EVENTS.envelope_schema(cls), indent=2, ensure_ascii=False
        )
        + "\n"
        for cls in EVENTS.public_types()
        if cls.event_name.startswith("servicedesk.")
    }


def config() -> None:
    """Print the configuration table (the README embeds it)."""
    typer.echo(settings_table(), nl=False)


def schemas(
    out: Annotated[Path, typer.Option(help="Folder to write into.")] = EVENTS_DIR,
    check: Annotated[bool, typer.Option(help="Only report whether the folder is current.")] = False,
) -> None:
    """Write the JSON Schema of every public event (one file per event type and version)."""
    wanted = event_schemas()
    current = {p.name: p.read_text() for p in out.glob("*.json")} if out.exists() else {}
    stale = sorted(n for n in wanted if current.get(n) != wanted[n])
    extra = sorted(set(current) - set(wanted))
    if check:
        for name in stale + extra:
            console.print(f"out of date: {out / name}")
        raise typer.Exit(1 if stale or extra else 0)
    out.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (out / name).write_text(wanted[name])
    for name in extra:
        (out / name).unlink()
    console.print(
        f"{len(wanted)} event schemas in {out} ({len(stale)} written, {len(extra)} removed)"
    )

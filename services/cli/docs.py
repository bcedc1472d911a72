"""Documentation generated from code: ``desk config`` and ``desk schemas``.

The README's configuration table and ``docs/events/*.json`` are written by these commands, and
tests fail when the committed files differ from what the code would write now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from services import desk_settings, service_names, settings_class
from services.cli.context import console
from shared.settings import Settings, env_name

EVENTS_DIR = Path("docs/events")


ASYNCAPI = Path("docs/asyncapi.yaml")
OPENAPI = Path("docs/openapi.json")


def register(app: typer.Typer) -> None:
    app.command()(config)
    app.command()(schemas)
    app.command()(asyncapi)
    app.command()(openapi)


def settings_table() -> str:
    """Markdown table of every setting: environment variable, default, who reads it, meaning.

    The kernel's settings first (every process reads them), then each service's own.
    """
    lines = [
        "| environment variable | default | read by | meaning |",
        "| --- | --- | --- | --- |",
    ]
    owners: list[tuple[str, type[Settings]]] = [("every process", Settings)]
    owners += [(name, settings_class(name)) for name in service_names()]
    for owner, cls in owners:
        for name, field in cls.model_fields.items():
            if owner != "every process" and name in Settings.model_fields:
                continue
            description = (field.description or "").replace("|", "\\|")
            lines.append(
                f"| `{env_name(name, field)}` | `{_default(field.default)}` | {owner} "
                f"| {description} |"
            )
    return "\n".join(lines) + "\n"


def _default(value: Any) -> str:
    from datetime import timedelta

    from shared.durations import format_duration

    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return format_duration(value) if isinstance(value, timedelta) else str(value)


def event_schemas() -> dict[str, str]:
    """File name -> JSON Schema text for every public event of every service."""
    from services import load_all_events
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


def _document_settings() -> Settings:
    return desk_settings(
        database_url="postgresql://desk@postgres/servicedesk",
        kafka_bootstrap_servers="kafka:9092",
        topic_prefix="",
    )


def openapi_document() -> str:
    """The OpenAPI document of the services' own HTTP APIs (the console's), as they serve it."""
    from services import build_service

    settings = _document_settings()
    documents = [
        getattr(service.http, "openapi")()  # noqa: B009 - an ASGI app that documents itself
        for service in (build_service(name, settings) for name in service_names())
        if hasattr(service.http, "openapi")
    ]
    if len(documents) != 1:
        raise LookupError(f"expected one service with an HTTP API, found {len(documents)}")
    return json.dumps(documents[0], indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def openapi(
    out: Annotated[Path, typer.Option(help="File to write.")] = OPENAPI,
    check: Annotated[bool, typer.Option(help="Only report whether the file is current.")] = False,
) -> None:
    """Write the OpenAPI document of the console's HTTP API (generated from its routes)."""
    _write(out, openapi_document(), check=check)


def _write(out: Path, wanted: str, *, check: bool) -> None:
    """Write a generated document, or (``check``) only say whether the file is current."""
    current = out.read_text() if out.exists() else None
    if check:
        if current != wanted:
            console.print(f"out of date: {out}")
        raise typer.Exit(0 if current == wanted else 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(wanted)
    console.print(f"wrote {out}")


def asyncapi_document() -> str:
    """One AsyncAPI 3.0 document for the system, merged from the services' FastStream apps."""
    import yaml

    from services import build_service

    settings = _document_settings()
    merged: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "servicedesk",
            "version": "1",
            "description": (
                "Every topic servicedesk reads or writes. Events travel as CloudEvents 1.0 "
                "structured envelopes (key = stream id) with ce_* binary-mode headers, sealed "
                "by the publishing service: desk_kid (its key id) and desk_seal (base64url "
                "HMAC-SHA256 of the value); a consumer accepts an event type only from the "
                "service that owns it. Commands carry a credential: desk_token (a JWT's "
                "header.payload, HS256, kid) and desk_proof (base64url HMAC-SHA256 of the value "
                "keyed by the token's signature); see docs/security.md."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {"kafka": {"host": "kafka:9092", "protocol": "kafka"}},
        "channels": {},
        "operations": {},
        "components": {"messages": {}, "schemas": {}},
    }
    for name in service_names():
        spec = yaml.safe_load(build_service(name, settings).app.schema.to_specification().to_yaml())
        for section in ("channels", "operations"):
            for key, value in (spec.get(section) or {}).items():
                value.pop("servers", None)
                merged[section][key] = value
        for section in ("messages", "schemas"):
            for key, value in (spec.get("components", {}).get(section) or {}).items():
                existing = merged["components"][section].get(key)
                if existing is not None and existing != value:
                    raise ValueError(f"two services define {section} {key!r} differently")
                merged["components"][section][key] = value
    text: str = yaml.safe_dump(merged, sort_keys=True, allow_unicode=True, width=100)
    return text


def asyncapi(
    out: Annotated[Path, typer.Option(help="File to write.")] = ASYNCAPI,
    check: Annotated[bool, typer.Option(help="Only report whether the file is current.")] = False,
) -> None:
    """Write the AsyncAPI document of every topic (generated from the FastStream apps)."""
    _write(out, asyncapi_document(), check=check)

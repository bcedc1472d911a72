"""Documentation that is generated from code stays in step with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.docs import asyncapi_document, event_schemas, openapi_document, settings_table

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:8]
    text = "\n".join(head)
    assert text.index("make run") < text.index("make test")


def test_readme_configuration_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- settings:begin -->\n", "<!-- settings:end -->"
    committed = readme[readme.index(begin) + len(begin) : readme.index(end)]
    assert committed == settings_table(), "run `desk config` and paste it into the README"


def test_committed_event_schemas_match_the_code() -> None:
    folder = ROOT / "docs/events"
    committed = {p.name: p.read_text() for p in folder.glob("*.json")} if folder.exists() else {}
    wanted = event_schemas()
    assert sorted(committed) == sorted(wanted), "run `desk schemas`"
    for name, text in wanted.items():
        assert committed[name] == text, f"docs/events/{name} is stale; run `desk schemas`"


def test_committed_asyncapi_document_matches_the_apps() -> None:
    committed = (ROOT / "docs/asyncapi.yaml").read_text()
    assert committed == asyncapi_document(), "run `desk asyncapi`"
    for topic in ("requests.incoming", "requests.rejected", "intake.events"):
        assert f"address: {topic}" in committed


def test_committed_openapi_document_matches_the_console() -> None:
    committed = (ROOT / "docs/openapi.json").read_text()
    assert committed == openapi_document(), "run `desk openapi`"
    for path in ("/api/tickets", "/api/tickets/{number}/commands", "/api/commands/{command_id}"):
        assert f'"{path}"' in committed

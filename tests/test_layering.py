"""Who may import whom (docs/architecture.md, "Layering"), read from every module's imports."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("shared", "services", "bench", "tests")
OPEN_TO_TOOLS = ("queries", "demo", "mail")
"""The modules of a service that ``desk`` may import (it builds services through the list):
what it reads, and the channel adapters it runs (demo traffic, the email channel)."""
CONTRACTS = ("events", "commands", "contract")
"""The modules of a service other services may import: what it publishes, what it accepts
(dispatch's commands, intake's contract of requests.incoming)."""


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every first-party import, lazy and type-checking ones included."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found = [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found = [
                (node.lineno, f"{node.module}.{a.name}")
                if is_module(f"{node.module}.{a.name}")
                else (node.lineno, node.module)
                for a in node.names
            ]
        else:
            continue
        yield from ((line, name) for line, name in found if name.split(".")[0] in FIRST_PARTY)


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "services":
        return parts[0]
    if len(parts) == 1:
        return "registry"
    if parts[1] in ("policy", "vocabulary"):
        return "words"
    if parts[1] == "cli":
        return "cli"
    return f"service {parts[1]}"


def may_import(importer: str, imported: str) -> bool:
    """The rule of docs/architecture.md, "Layering"."""
    source, target = layer(importer), layer(imported)
    of_a_service = target.startswith("service ")
    module = imported.split(".")[2] if of_a_service and imported.count(".") >= 2 else ""
    if source in ("shared", "registry"):
        return target == "shared"
    if source == "words":
        return target in ("shared", "words")
    if source.startswith("service "):
        return target in ("shared", "words", source) or (of_a_service and module in CONTRACTS)
    if source == "cli":
        return target in ("shared", "registry", "words", "cli") or (
            of_a_service and module in OPEN_TO_TOOLS
        )
    if source == "bench":
        return target != "cli"
    return source == "tests"


def test_the_rule_refuses_what_it_should() -> None:
    assert not may_import("shared.consumer", "services.intake.events")
    assert not may_import("services.sla.handlers", "services.dispatch.storage")
    assert not may_import("services.sla.handlers", "services")
    assert not may_import("services.policy.sla", "services.sla.events")
    assert not may_import("services.cli.tickets", "services.intake.storage")
    assert not may_import("bench.intake", "services.cli.demo")
    assert may_import("services.notify.rules", "services.dispatch.events")
    assert may_import("services.console.courier", "services.dispatch.commands")
    assert not may_import("services.console.courier", "services.dispatch.authority")
    assert may_import("services.cli.sla", "services.sla.queries")
    assert may_import("bench.intake", "services.intake.demo")


def test_every_import_in_the_tree_follows_the_layering() -> None:
    broken: list[str] = []
    seen: set[tuple[str, str]] = set()
    for top in FIRST_PARTY:
        for path in sorted((ROOT / top).rglob("*.py")):
            importer = module_of(path)
            for line, imported in imports(path):
                seen.add((layer(importer), layer(imported)))
                if not may_import(importer, imported):
                    broken.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert broken == [], "\n".join(broken)
    # The walk saw each layer import what it may (it is not vacuously green).
    for edge in [
        ("service dispatch", "service intake"),
        ("cli", "registry"),
        ("cli", "service intake"),
        ("words", "shared"),
        ("bench", "service intake"),
    ]:
        assert edge in seen, edge

"""The list of services: a new service is a folder plus its name in ``services.SERVICES``.

The sixth service here is built from a temporary package (an extra folder on the ``services``
package's path) and goes through everything that finds services through the list: its settings
and their environment variables, the generated documents (`desk config`, the AsyncAPI document),
the build, its migrations (`desk migrate`), its port and its health (`desk status`).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import uvicorn
from typer.testing import CliRunner

import services
from services import (
    build_service,
    desk_settings,
    desk_settings_class,
    port_field,
    port_of,
    service_migrations,
    settings_class,
)
from services.cli import app as desk
from services.cli.docs import asyncapi_document, settings_table
from shared.privileges import create_roles, role_url, service_role
from tests.conftest import SettingsFactory
from tests.support.infrastructure import SessionInfrastructure
from tests.support.waiting import eventually

SIXTH = {
    "__init__.py": '"""A sixth service with nothing to do."""\n',
    "settings.py": (
        "from pydantic import Field\n\n"
        "from shared.settings import Settings\n\n\n"
        "class SixthSettings(Settings):\n"
        '    sixth_port: int = Field(default=8199, description="HTTP port of sixth.")\n'
        '    sixth_greeting: str = Field(default="hello", description="What sixth says.")\n'
    ),
    "app.py": (
        "from services.sixth.settings import SixthSettings\n"
        "from shared.migrations import load\n"
        "from shared.service import Service\n"
        "from shared.settings import Settings\n\n"
        'MIGRATIONS = load("sixth", "services.sixth")\n\n\n'
        "def build(settings: Settings) -> Service:\n"
        "    own = SixthSettings.of(settings)\n"
        '    return Service("sixth", own, port=own.sixth_port, description="Nothing yet.",\n'
        "                   publishes={}, migrations=MIGRATIONS)\n"
    ),
    "sql/001_sixth.sql": "CREATE TABLE greetings (said text NOT NULL);\n",
}


def add_service(
    monkeypatch: pytest.MonkeyPatch, root: Path, name: str, files: dict[str, str]
) -> None:
    """What an engineer does: a folder ``services/<name>/`` and its name in the list."""
    for path, text in files.items():
        (root / name / path).parent.mkdir(parents=True, exist_ok=True)
        (root / name / path).write_text(text)
    monkeypatch.setattr(services, "__path__", [*services.__path__, str(root)])
    monkeypatch.setattr(services, "SERVICES", (*services.SERVICES, name))


@pytest.fixture
def sixth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    add_service(monkeypatch, tmp_path / "extra", "sixth", SIXTH)
    yield "sixth"
    for module in [m for m in sys.modules if m.split(".")[:2] == ["services", "sixth"]]:
        del sys.modules[module]


@pytest.mark.unit
def test_every_listed_service_has_its_settings_and_the_combined_class_is_each_of_them() -> None:
    ports = {name: 9100 + n for n, name in enumerate(services.SERVICES)}
    combined = desk_settings(**{port_field(name): port for name, port in ports.items()})
    for name in services.SERVICES:
        own = settings_class(name)
        assert isinstance(combined, own)
        assert own.of(combined) is combined
        assert port_of(combined, name) == ports[name]
    assert desk_settings_class() is desk_settings_class()


@pytest.mark.unit
def test_a_service_without_one_settings_class_with_its_port_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    portless = (
        "from shared.settings import Settings\n\n\nclass BadSettings(Settings):\n    x: int = 1\n"
    )
    add_service(monkeypatch, tmp_path / "extra", "portless", {"settings.py": portless})
    try:
        with pytest.raises(LookupError, match="portless_port"):
            settings_class("portless")
    finally:
        sys.modules.pop("services.portless.settings", None)
        sys.modules.pop("services.portless", None)


@pytest.mark.unit
def test_a_sixth_service_has_settings_from_its_environment_and_a_row_in_the_table(
    sixth: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESK_SIXTH_PORT", "18199")
    monkeypatch.setenv("DESK_SIXTH_GREETING", "你好")
    settings = desk_settings()
    assert port_of(settings, sixth) == 18199
    assert settings_class(sixth).of(settings).sixth_greeting == "你好"  # type: ignore[attr-defined]
    assert "| `DESK_SIXTH_PORT` | `8199` | sixth | HTTP port of sixth. |" in settings_table()
    printed = CliRunner().invoke(desk, ["config"])
    assert printed.exit_code == 0
    assert "`DESK_SIXTH_GREETING` | `hello` | sixth |" in printed.output
    # The AsyncAPI document is built from every listed service; sixth publishes nothing yet.
    assert "address: requests.incoming" in asyncapi_document()


@pytest.mark.asyncio
async def test_a_sixth_service_is_migrated_built_served_and_seen_by_desk_status(
    sixth: str,
    make_settings: SettingsFactory,
    infrastructure: SessionInfrastructure,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    settings = make_settings()
    assert [m.source for m in service_migrations(sixth)][-1] == "sixth"
    admin = await asyncpg.connect(infrastructure.admin_database_url)
    try:  # what a superuser does once per cluster for a new service (desk up does it locally)
        await create_roles(admin, [sixth])
    finally:
        await admin.close()
    for variable, value in {
        "DATABASE_URL": settings.require_database_url(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.require_bootstrap_servers(),
        "DESK_DATA_DIR": str(tmp_path / "no-desk-up"),
        "DESK_SIXTH_PORT": str(port_of(settings, sixth)),
    }.items():
        monkeypatch.setenv(variable, value)

    migrated = await asyncio.to_thread(CliRunner().invoke, desk, ["migrate", sixth])
    assert migrated.exit_code == 0, migrated.output
    assert "sixth/001_sixth" in migrated.output
    conn = await asyncpg.connect(settings.require_database_url())
    try:
        assert await conn.fetchval("SELECT to_regclass('sixth.greetings')::text") == (
            "sixth.greetings"
        )
    finally:
        await conn.close()

    service = build_service(sixth, settings)
    service.database_url = role_url(settings.require_database_url(), service_role(sixth))
    assert (service.name, service.port) == (sixth, port_of(settings, sixth))
    server = uvicorn.Server(
        uvicorn.Config(service.app, port=service.port, log_config=None, lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        status = await eventually(
            lambda: asyncio.to_thread(CliRunner().invoke, desk, ["status", sixth]),
            lambda result: result.exit_code == 0,
            timeout=60,
            what="desk status sixth exits 0",
        )
    finally:
        server.should_exit = True
        await serving
    row = next(line for line in status.output.splitlines() if line.startswith("│ sixth"))
    assert " up " in row and "ready" in row

"""docker-compose.yml refers only to things that exist: no Docker here, so read it carefully."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services import desk_settings_class, port_field, service_names, settings_class
from services.cli import app as desk
from shared.settings import Settings, env_name

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SERVICE_NAMES = service_names()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def test_every_service_and_the_infrastructure_are_defined(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(SERVICE_NAMES) <= set(services)
    assert {"kafka", "postgres", "migrate"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"], "KRaft, no ZooKeeper"
    assert services["postgres"]["image"].startswith("postgres:")


def test_builds_point_at_the_dockerfile_and_it_runs_slim_and_unprivileged(
    compose: dict[str, Any],
) -> None:
    for name in (*SERVICE_NAMES, "migrate"):
        build = compose["services"][name]["build"]
        dockerfile = ROOT / build["context"] / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
    text = (ROOT / "deploy/Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]-slim", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0")), "the image must not run as root"
    for copied in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / copied).exists(), f"Dockerfile copies {copied}, which does not exist"


def test_commands_run_modules_and_desk_commands_that_exist(compose: dict[str, Any]) -> None:
    desk_commands = {c.name or c.callback.__name__ for c in desk.registered_commands}  # type: ignore[union-attr]
    for name, service in compose["services"].items():
        command = service.get("command")
        if not command or name in {"kafka", "postgres"}:
            continue
        if command[:2] == ["python", "-m"]:
            module = command[2]
            assert (ROOT / module.replace(".", "/") / "__main__.py").is_file(), module
            if name in SERVICE_NAMES:
                assert module == f"services.{name}"
        else:
            assert command[0] == "desk" and command[1] in desk_commands, command


def test_each_container_sets_only_settings_its_process_reads(compose: dict[str, Any]) -> None:
    readers: dict[str, type[Settings]] = {"migrate": desk_settings_class()}
    readers.update({name: settings_class(name) for name in SERVICE_NAMES})
    for name, cls in readers.items():
        environment = compose["services"][name]["environment"]
        known = {env_name(field, info): field for field, info in cls.model_fields.items()}
        unknown = set(environment) - set(known)
        assert not unknown, f"{name} sets variables its settings do not have: {unknown}"
        cls.model_validate({known[variable]: value for variable, value in environment.items()})
    for name in SERVICE_NAMES:
        environment = compose["services"][name]["environment"]
        port = environment[f"DESK_{port_field(name).upper()}"]
        assert compose["services"][name]["ports"] == [f"{port}:{port}"]
        assert f":{port}/ready" in " ".join(compose["services"][name]["healthcheck"]["test"])
        assert environment["DATABASE_URL"].split("@")[1].startswith("postgres:")
        assert environment["KAFKA_BOOTSTRAP_SERVERS"].startswith("kafka:")


def test_depends_on_names_defined_services(compose: dict[str, Any]) -> None:
    defined = set(compose["services"])
    for name, service in compose["services"].items():
        for dependency in service.get("depends_on", {}):
            assert dependency in defined, f"{name} depends on undefined {dependency}"
            condition = service["depends_on"][dependency]["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in compose["services"][dependency], dependency

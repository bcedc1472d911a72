"""docker-compose.yml refers only to things that exist, and is hardened: no Docker here (and no
Apache Kafka), so read it carefully. The Kafka ACLs are derived from the services' declared
publishes and subscriptions and checked against the setup script the compose file runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from services import (
    build_service,
    desk_settings,
    desk_settings_class,
    port_field,
    service_names,
    settings_class,
)
from services.cli import app as desk
from services.cli.acls import (
    SECURITY_DOC,
    SETUP_SCRIPT,
    Acl,
    acl_table,
    derive_acls,
    principals,
    setup_script,
)
from shared.deadletter import dead_letter_topics
from shared.privileges import OWNER_ROLE, service_role
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
    broker = _properties(ROOT / "deploy/kafka/server.properties")
    assert "controller" in broker["process.roles"], "KRaft, no ZooKeeper"
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
        if not command or name in {"kafka", "kafka-setup", "postgres"}:
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
        assert compose["services"][name]["ports"] == [f"127.0.0.1:{port}:{port}"]
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


# --- hardening -------------------------------------------------------------------------------


def _properties(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.startswith("#")}


def test_each_service_is_its_own_database_role_and_kafka_principal_never_a_superuser(
    compose: dict[str, Any],
) -> None:
    roles = set(re.findall(r"CREATE ROLE (\w+) LOGIN (.*?) PASSWORD", _init_roles()))
    assert {r for r, _ in roles} == {OWNER_ROLE, *(service_role(n) for n in SERVICE_NAMES)}
    assert all("NOSUPERUSER" in rights and "NOCREATEROLE" in rights for _, rights in roles)
    assert f"CREATE DATABASE servicedesk OWNER {OWNER_ROLE}" in _init_roles()
    for name in SERVICE_NAMES:
        environment = compose["services"][name]["environment"]
        user = environment["DATABASE_URL"].split("//", 1)[1].split(":", 1)[0]
        assert user == service_role(name), f"{name} connects as {user}"
        assert environment["DESK_KAFKA_SECURITY_PROTOCOL"].startswith("SASL_")
        assert environment["DESK_KAFKA_SASL_MECHANISM"].startswith("SCRAM-")
        assert environment["DESK_KAFKA_SASL_USERNAME"] == name
        assert environment["DESK_KAFKA_CREATE_TOPICS"] == "false"
        assert "DESK_LOCAL_MODE" not in environment, "compose is not local mode"
    migrate = compose["services"]["migrate"]["environment"]["DATABASE_URL"]
    assert migrate.split("//", 1)[1].startswith(f"{OWNER_ROLE}:")
    assert compose["services"]["postgres"]["environment"]["POSTGRES_USER"] == "postgres"


def test_postgres_kafka_and_the_mail_catcher_are_not_published_on_host_interfaces(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping}"
    for name in ("kafka", "postgres"):
        assert "ports" not in compose["services"][name], name
    assert compose["services"]["mail"]["ports"] == ["127.0.0.1:8025:8025"], "web UI only"


def test_every_secret_is_required_and_none_has_a_default() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    references = re.findall(r"\$\{([A-Z0-9_]+)(:?[-?]?)", text)
    assert references, "the compose file takes its secrets from the environment"
    for variable, operator in references:
        assert operator == ":?", f"${{{variable}}} must be required (${{{variable}:?…}})"
    required = {v for v, _ in references}
    for secret in (
        "DESK_KEYS",
        "DESK_MASTER_KEY",
        "DESK_NOTIFY_SIGNING_SECRET",
        "POSTGRES_PASSWORD",
    ):
        assert secret in required
    assert {f"DB_{n.upper()}_PASSWORD" for n in SERVICE_NAMES} <= required
    assert "change-me" not in text and "desk:desk@" not in text


def test_the_broker_authenticates_and_denies_what_no_acl_allows() -> None:
    broker = _properties(ROOT / "deploy/kafka/server.properties")
    protocols = dict(p.split(":") for p in broker["listener.security.protocol.map"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}, "no unauthenticated listener"
    assert broker["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert broker["authorizer.class.name"].endswith("StandardAuthorizer")
    assert broker["allow.everyone.if.no.acl.found"] == "false"
    assert broker["super.users"] == "User:admin"
    assert not [k for k in broker if "jaas" in k or "password" in k], "secrets come at start"


def test_the_acl_table_is_derived_from_the_services_and_the_setup_script_is_current(
    compose: dict[str, Any],
) -> None:
    acls = derive_acls()
    assert (ROOT / SETUP_SCRIPT).read_text() == setup_script(acls), "run `desk acls`"
    security = (ROOT / SECURITY_DOC).read_text()
    assert acl_table(acls) in security, "run `desk acls`"

    def allowed(who: str, operation: str, topic: str) -> bool:
        return Acl(who, "topic", topic, operation) in acls

    for name in SERVICE_NAMES:
        service = build_service(name, desk_settings(**_OFFLINE))
        for topic in service.publishes:
            assert allowed(name, "Write", topic)
            assert [o for o in SERVICE_NAMES if o != name and allowed(o, "Write", topic)] == []
        for runner in service.consumers:
            assert Acl(name, "group", runner.group_id, "Read") in acls
            for topic in runner.topics:
                assert allowed(name, "Read", topic)
        written = {a.name for a in acls if a.principal == name and a.operation == "Write"}
        consumed = [t for r in service.consumers for t in r.topics]
        assert written == {*service.publishes, *service.sends, *dead_letter_topics(consumed)}
    assert not allowed("sla", "Write", "dispatch.events")
    assert not allowed("dispatch", "Write", "sla.events")
    assert allowed("clients", "Write", "tickets.commands")
    assert not allowed("clients", "Write", "sla.events")
    # The console sends people's commands (signed with their tokens) and publishes nothing.
    assert allowed("console", "Write", "tickets.commands")
    assert not allowed("console", "Write", "dispatch.events")
    assert allowed("clients", "Read", "tickets.commands.rejected")  # still the desks' answers

    setup = compose["services"]["kafka-setup"]
    assert setup["command"][-1] == "/opt/desk/kafka/setup.sh"
    assert "./deploy/kafka:/opt/desk/kafka:ro" in setup["volumes"]
    for who in principals(acls):
        assert f"KAFKA_{who.upper()}_PASSWORD" in setup["environment"], who


def test_desk_acls_check_passes() -> None:
    result = CliRunner().invoke(desk, ["acls", "--check"])
    assert result.exit_code == 0, result.output


def _init_roles() -> str:
    return (ROOT / "deploy/postgres/init-roles.sh").read_text()


_OFFLINE = {
    "database_url": "postgresql://desk@postgres/servicedesk",
    "kafka_bootstrap_servers": "kafka:9092",
    "topic_prefix": "",
}

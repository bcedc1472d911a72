"""``desk acls``: each Kafka principal's rights, derived from what the services declare.

Every service is its own principal (SASL/SCRAM user = the service's name): it writes the topics
it publishes and the dead-letter topics of what it consumes, reads what it consumes, in its own
consumer groups, and nothing else. Two principals stand for what is outside the services:
``clients`` (channel adapters and agent desks) write the topics no service publishes but one
consumes (requests, commands: each subscription says who writes it) and read the answers no
service acts on (rejections, notices: a service that publishes nothing, like the console's read
models, only watches them); ``operator`` (the ``desk`` tools: dead-letter replay,
demo) reads every topic and writes the consumed ones. The table is in ``docs/security.md`` and
the commands that set it up in ``deploy/kafka/setup.sh``; both are written by ``desk acls`` and
a test keeps them current.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from services import build_service, desk_settings, service_names
from services.cli.context import console
from shared.deadletter import DLQ_SUFFIX, dead_letter_topics
from shared.kafka import topic_layout
from shared.settings import Settings

SETUP_SCRIPT = Path("deploy/kafka/setup.sh")
SECURITY_DOC = Path("docs/security.md")
TABLE_BEGIN, TABLE_END = "<!-- acls:begin -->", "<!-- acls:end -->"
CLIENTS, OPERATOR = "clients", "operator"


@dataclass(frozen=True, order=True)
class Acl:
    principal: str
    resource: str
    """``topic`` or ``group``."""
    name: str
    operation: str
    """``Read``, ``Write`` or ``Describe``."""


def derive_acls() -> list[Acl]:
    """The ACLs of every principal, from the services' publishes and subscriptions."""
    settings = desk_settings(
        database_url="postgresql://desk@postgres/servicedesk",
        kafka_bootstrap_servers="kafka:9092",
        topic_prefix="",
    )
    acls: set[Acl] = set()
    published: set[str] = set()
    consumed: dict[str, str] = {}
    """Consumed topic -> who writes it when no service does."""
    acted_on: set[str] = set()
    """Topics consumed by a service that publishes events: internal feeds, not answers."""
    for name in service_names():
        service = build_service(name, settings)

        def allow(resource: str, topic: str, *operations: str, who: str = name) -> None:
            acls.update(Acl(who, resource, topic, op) for op in operations)

        for topic in service.publishes:
            allow("topic", topic, "Write", "Describe")
            published.add(topic)
        for topic in service.sends:
            allow("topic", topic, "Write", "Describe")
        for topic in service.watches:
            allow("topic", topic, "Read", "Describe")
        for runner in service.consumers:
            allow("group", runner.group_id, "Read")
            for topic in runner.topics:
                allow("topic", topic, "Read", "Describe")
                for dead in dead_letter_topics([topic]):
                    allow("topic", dead, "Write", "Describe")
                consumed[topic] = runner.subscription.written_by
                if service.publishes:
                    acted_on.add(topic)
    dead_letters = {t for t in consumed if t.endswith(DLQ_SUFFIX)}  # the services write them
    for topic in sorted(set(consumed) - published - dead_letters):
        acls.update(Acl(consumed[topic], "topic", topic, op) for op in ("Write", "Describe"))
    for topic in sorted(published - acted_on):
        acls.update(Acl(CLIENTS, "topic", topic, op) for op in ("Read", "Describe"))
    every = {a.name for a in acls if a.resource == "topic"}
    for topic in every:
        acls.update(Acl(OPERATOR, "topic", topic, op) for op in ("Read", "Describe"))
    for topic in set(consumed) - dead_letters:
        acls.add(Acl(OPERATOR, "topic", topic, "Write"))
    return sorted(acls)


def principals(acls: list[Acl]) -> list[str]:
    """Every principal, the services first (in the order of the list), then the outside."""
    names = list(service_names())
    return [*names, *sorted({a.principal for a in acls} - set(names))]


def acl_table(acls: list[Acl]) -> str:
    """Markdown: one row per principal and resource, its operations."""
    lines = ["| principal | resource | name | operations |", "| --- | --- | --- | --- |"]
    for who in principals(acls):
        rows: dict[tuple[str, str], list[str]] = {}
        for acl in acls:
            if acl.principal == who:
                rows.setdefault((acl.resource, acl.name), []).append(acl.operation)
        for (resource, name), operations in sorted(rows.items()):
            lines.append(f"| `{who}` | {resource} | `{name}` | {', '.join(sorted(operations))} |")
    return "\n".join(lines) + "\n"


def setup_script(acls: list[Acl]) -> str:
    """The one-shot setup of the compose deployment's Kafka: topics, SCRAM users, ACLs."""
    partitions = Settings.model_fields["topic_partitions"].default
    topics = sorted({a.name for a in acls if a.resource == "topic"})
    lines = [
        "#!/bin/sh",
        "# Generated by `desk acls` from the services' declared publishes and subscriptions;",
        "# tests/deploy/test_compose.py fails when it is stale. Run once by the kafka-setup",
        "# service of docker-compose.yml, as the broker's admin; safe to run again.",
        "set -eu",
        'BIN="${KAFKA_BIN:-/opt/kafka/bin}"',
        'ADMIN="--bootstrap-server ${KAFKA_BOOTSTRAP:-kafka:9092} '
        '--command-config ${KAFKA_ADMIN_CONFIG:-/etc/kafka/admin.properties}"',
        "",
        "# Topics (services do not create them here: DESK_KAFKA_CREATE_TOPICS=false).",
    ]
    for topic in topics:
        count, configs = topic_layout(topic, partitions)
        layout = (
            f"--partitions ${{DESK_TOPIC_PARTITIONS:-{partitions}}}"
            if count == partitions
            else f"--partitions {count}"
        )
        layout += "".join(f" --config {k}={v}" for k, v in configs.items())
        lines.append(
            f'"$BIN/kafka-topics.sh" $ADMIN --create --if-not-exists --topic {topic} '
            f"{layout} --replication-factor ${{DESK_TOPIC_REPLICATION_FACTOR:-1}}"
        )
    lines += ["", "# One SCRAM user per principal; each password from its own variable."]
    for who in principals(acls):
        variable = f"KAFKA_{who.upper()}_PASSWORD"
        lines.append(
            f'"$BIN/kafka-configs.sh" $ADMIN --alter --entity-type users --entity-name {who} '
            f'--add-config "SCRAM-SHA-512=[password=${{{variable}:?set {variable}}}]"'
        )
    lines += ["", "# What each principal may do; anything not listed is denied."]
    for acl in acls:
        resource = "--topic" if acl.resource == "topic" else "--group"
        lines.append(
            f'"$BIN/kafka-acls.sh" $ADMIN --add --allow-principal User:{acl.principal} '
            f"--operation {acl.operation} {resource} {acl.name}"
        )
    return "\n".join(lines) + "\n"


def with_table(document: str, table: str) -> str:
    head, _, rest = document.partition(TABLE_BEGIN)
    _, _, tail = rest.partition(TABLE_END)
    return f"{head}{TABLE_BEGIN}\n{table}{TABLE_END}{tail}"


def acls(
    check: Annotated[bool, typer.Option(help="Only report whether the files are current.")] = False,
) -> None:
    """Write Kafka's ACL table (docs/security.md) and setup script (deploy/kafka/setup.sh),
    derived from the services' declared publishes and subscriptions."""
    derived = derive_acls()
    wanted = {
        SETUP_SCRIPT: setup_script(derived),
        SECURITY_DOC: with_table(SECURITY_DOC.read_text(), acl_table(derived)),
    }
    stale = [path for path, text in wanted.items() if path.read_text() != text]
    if check:
        for path in stale:
            console.print(f"out of date: {path}")
        raise typer.Exit(1 if stale else 0)
    for path in stale:
        path.write_text(text := wanted[path])
        if path == SETUP_SCRIPT:
            path.chmod(0o755)
        console.print(f"wrote {path} ({len(text.splitlines())} lines)")

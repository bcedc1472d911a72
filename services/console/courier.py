"""Commands people send through the console, in their own name.

The console checks the command's shape against dispatch's contract (its ``commands`` module),
records that the caller sent it (so ``GET /api/commands/{id}`` can answer "pending" to them and
to nobody else), and publishes it to ``tickets.commands`` / ``agents.commands`` signed with the
caller's own token (:func:`shared.credentials.sign_command`). It holds no key for that and vouches
for nobody: dispatch verifies the caller as it verifies any desk, and decides.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter
from pydantic import TypeAdapter, ValidationError

from services.console.contract import CommandStatus
from services.console.settings import ConsoleSettings
from services.dispatch import commands as contract
from services.dispatch.events import AGENT_COMMANDS, TICKET_COMMANDS
from shared.credentials import sign_command
from shared.database import Connection

SENT = Counter(
    "desk_console_commands_sent_total", "Commands sent in people's names, by kind.", ["kind"]
)
Kind = Literal["ticket", "agent"]
_SHAPES: dict[Kind, TypeAdapter[Any]] = {
    "ticket": TypeAdapter(contract.TicketCommand),
    "agent": TypeAdapter(contract.AgentCommand),
}
_TARGET: dict[Kind, str] = {"ticket": "ticket_number", "agent": "agent_id"}
_TOPIC: dict[Kind, str] = {"ticket": TICKET_COMMANDS, "agent": AGENT_COMMANDS}


class Invalid(ValueError):
    """Not a command of dispatch's contract; ``field`` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Busy(TimeoutError):
    """No sending slot freed within ``console_send_wait``: the broker is slow to answer."""


class Taken(Exception):
    """The command id was sent before by someone else."""


class Reused(Exception):
    """The command id was sent before by the same caller, with another command."""


@dataclass(frozen=True)
class Sent:
    command_id: str
    fresh: bool
    """False when the same caller sent this command id before (a retry) and it was not
    refused: nothing was sent. A refused one is sent again (dispatch evaluates it anew)."""


def command_schema(kind: Kind) -> dict[str, Any]:
    """The request body's JSON Schema: dispatch's command, without what the path and the
    console fill in (the target, and the command id when none is given)."""
    schema = _SHAPES[kind].json_schema(ref_template="#/components/schemas/{model}")
    for model in schema.get("$defs", {}).values():
        required = model.get("required", [])
        model["required"] = [r for r in required if r not in (_TARGET[kind], "command_id")]
    return schema


def shape(kind: Kind, target: str, body: dict[str, Any], actor: str) -> dict[str, Any]:
    """The command as dispatch reads it, or :class:`Invalid`."""
    if body.get(_TARGET[kind], target) != target:
        raise Invalid(_TARGET[kind], f"must be the one in the path ({target})")
    if body.get("actor", actor) != actor:
        raise Invalid("actor", "a command acts as its sender (the token's subject)")
    # Made only when none is given: a given one, even "" or 0, is the contract's to judge —
    # replaced, each retry would be a new command (a customer answered twice).
    command_id = body["command_id"] if "command_id" in body else str(uuid.uuid4())
    value = {**body, _TARGET[kind]: target, "command_id": command_id}
    try:
        command = _SHAPES[kind].validate_python(value)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<body>"
        raise Invalid(where, first["msg"]) from None
    shaped: dict[str, Any] = command.model_dump(mode="json", exclude_none=True)
    return shaped


class Courier:
    """Records and publishes people's commands."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(max(1, settings.db_pool_max_size // 2))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of the console's sending slots, taken before a connection is: a send holds its
        connection (and transaction) until the broker answers, up to its request timeout, so a
        stalled broker with unbounded sends would hold the whole pool and freeze every read,
        /ready included. Half the pool may send; the rest wait here, holding nothing, for
        ``console_send_wait`` at most, then :class:`Busy`."""
        try:
            async with asyncio.timeout(self.settings.console_send_wait.total_seconds()):
                await self._slots.acquire()
        except TimeoutError:
            raise Busy("no sending slot freed: the broker is slow to answer") from None
        try:
            yield
        finally:
            self._slots.release()

    async def send(
        self,
        conn: Connection,
        producer: AIOKafkaProducer,
        *,
        kind: Kind,
        command: dict[str, Any],
        actor: str,
        token: str,
        now: datetime,
    ) -> Sent:
        """Record, then publish and await the broker, in one transaction (the caller holds a
        :meth:`slot`): a concurrent retry waits on the row until this one is sent (or undone,
        when publishing fails; then it sends itself), so no answer says "sent" for a command
        that never was.

        The same id again from the same caller: with another command, :class:`Reused`; after
        dispatch refused it, sent again (a refusal does not use up the id, README), its old
        decision forgotten; otherwise nothing is sent."""
        command_id, target = command["command_id"], command[_TARGET[kind]]
        said = digest(command)
        async with conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO commands (command_id, kind, target, type, actor, submitted_at, "
                "digest) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (command_id) DO NOTHING RETURNING true",
                command_id,
                kind,
                target,
                command["type"],
                actor,
                now,
                said,
            )
            if not inserted:
                earlier = await conn.fetchrow(
                    "SELECT c.actor, c.digest, d.outcome, c.submitted_at FROM commands c "
                    "LEFT JOIN decisions d USING (command_id) WHERE c.command_id = $1 "
                    "FOR UPDATE OF c",
                    command_id,
                )
                if earlier is None or earlier["actor"] != actor:
                    raise Taken(command_id)
                if earlier["digest"] not in (None, said):
                    raise Reused(command_id)
                if earlier["outcome"] != "refused":
                    return Sent(command_id, fresh=False)
                await conn.execute("DELETE FROM decisions WHERE command_id = $1", command_id)
                # Signed anew, so not the same record: dispatch skips a copy of a refused one.
                now = max(now, earlier["submitted_at"] + timedelta(microseconds=1))
                await conn.execute(
                    "UPDATE commands SET submitted_at = $2 WHERE command_id = $1", command_id, now
                )
            command = {**command, "issued_at": now.isoformat()}
            value = json.dumps(command, ensure_ascii=False).encode()
            await (
                await producer.send(
                    self.settings.topic(_TOPIC[kind]),
                    value=value,
                    key=target.encode(),
                    headers=sign_command(token, value),
                )
            )
        SENT.labels(kind).inc()
        return Sent(command_id, fresh=True)


def digest(command: dict[str, Any]) -> bytes:
    """What a command says, as a fingerprint: its canonical JSON without ``actor`` (the token
    says who) and ``issued_at`` (a retry may stamp a new one)."""
    said = {k: v for k, v in command.items() if k not in ("actor", "issued_at")}
    return hashlib.sha256(json.dumps(said, sort_keys=True, ensure_ascii=False).encode()).digest()


async def status(conn: Connection, command_id: str) -> tuple[str, CommandStatus] | None:
    """A command the console sent, with dispatch's decision if there is one yet, and its
    sender."""
    row = await conn.fetchrow(
        "SELECT c.command_id, c.kind, c.target, c.type, c.actor, c.submitted_at, d.outcome, "
        "d.reason, d.detail, d.decided_at FROM commands c "
        "LEFT JOIN decisions d USING (command_id) WHERE c.command_id = $1",
        command_id,
    )
    if row is None:
        return None
    return row["actor"], CommandStatus(
        command_id=row["command_id"],
        kind=row["kind"],
        target=row["target"],
        type=row["type"],
        status=row["outcome"] or "pending",
        reason=row["reason"],
        detail=row["detail"],
        submitted_at=row["submitted_at"],
        decided_at=row["decided_at"],
    )

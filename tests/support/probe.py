"""A small service built on the kernel, for testing the kernel with real processes.

It reads JSON commands from ``probe.commands`` (``{"id", "counter", "amount"}``) and records a
``CounterBumped`` event per command; the relay publishes those to ``probe.events``; a second
consumer, ``tally``, applies each event to a table. ``{"fail": "always"}`` in a command makes the
handler raise every time (a poison message); ``{"fail": "<n>"}`` makes it fail n times first;
``{"refuse": "<n>"}`` makes it refuse the command without effect (released) n times first.

Run as ``python -m tests.support.probe`` with the port in ``PROBE_PORT``.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.consumer import Delivered, EventSubscription, Inbound, Rejected, Subscription
from shared.deadletter import Reason, Record
from shared.events import EventData, event
from shared.eventstore import ANY_VERSION
from shared.migrations import load
from shared.projection import Projection
from shared.service import Service, Worker, serve
from shared.settings import Settings
from shared.unit_of_work import Cause, UnitOfWork

COMMANDS = "probe.commands"
EVENTS = "probe.events"
_failures: dict[str, int] = {}
_refusals: dict[str, int] = {}
COMMITTED: list[str] = []
"""Ids of the commands whose transaction committed, as the unit of work's ``on_commit`` saw."""


@event("test.probe.counter_bumped", version=1)
class CounterBumped(EventData):
    counter: str
    amount: int


class BumpCommand(BaseModel):
    id: str
    counter: str
    amount: int = 1
    fail: str | None = None
    refuse: int = 0


class Commands(Subscription[BumpCommand]):
    name = "commands"
    topics = (COMMANDS,)
    description = "Bump commands for the kernel tests."
    payload = BumpCommand

    def decode(self, record: Record) -> BumpCommand:
        try:
            return BumpCommand.model_validate_json(record.value)
        except ValidationError as error:
            invalid_json = any(e["type"] == "json_invalid" for e in error.errors())
            raise Rejected(
                Reason.UNDECODABLE if invalid_json else Reason.SCHEMA_INVALID, str(error)
            ) from None

    def message_id(self, message: BumpCommand, record: Record) -> str:
        return message.id

    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[BumpCommand]]) -> None:
        uow.on_commit(functools.partial(COMMITTED.extend, [m.message.id for m in messages]))
        for inbound in messages:
            command = inbound.message
            if command.fail == "always":
                raise RuntimeError(f"command {command.id} is poison")
            if command.fail and command.fail.isdigit():
                seen = _failures.get(command.id, 0)
                if seen < int(command.fail):
                    _failures[command.id] = seen + 1
                    raise RuntimeError(f"command {command.id} fails ({seen + 1})")
            if _refusals.get(command.id, 0) < command.refuse:
                _refusals[command.id] = _refusals.get(command.id, 0) + 1
                inbound.release()
                continue
            uow.caused_by(Cause(command.id))(
                f"counter-{command.counter}",
                [CounterBumped(counter=command.counter, amount=command.amount)],
                expected_version=ANY_VERSION,
                subject=command.counter,
            )


class Tally(EventSubscription):
    name = "tally"
    topics = (EVENTS,)
    description = "Applies bumps to the tallies."
    accepts = ("test.probe.counter_bumped",)

    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[Delivered]]) -> None:
        rows = []
        for inbound in messages:
            data = inbound.message.data
            assert isinstance(data, CounterBumped)
            rows.append((self.name, inbound.message_id, data.counter, data.amount))
        await uow.conn.executemany(
            "INSERT INTO applied (consumer, message_id, counter, amount) VALUES ($1, $2, $3, $4)",
            rows,
        )


class TotalsProjection(Projection):
    """Totals per counter from the probe's own log (an inline projection)."""

    name = "totals"
    tables = ("tallies",)

    async def apply(self, conn: Any, events: Sequence[Any]) -> None:
        for recorded in events:
            data = recorded.decode()
            if isinstance(data, CounterBumped):
                await conn.execute(
                    "INSERT INTO tallies (counter, total) VALUES ($1, $2) ON CONFLICT (counter) "
                    "DO UPDATE SET total = tallies.total + excluded.total",
                    data.counter,
                    data.amount,
                )


def build(
    settings: Settings,
    *,
    port: int | None = None,
    tally: bool = True,
    workers: Sequence[Worker] = (),
    marks: str | None = None,
) -> Service:
    subscriptions: list[Subscription[Any]] = [Commands()]
    if tally:
        subscriptions.append(Tally())
    return Service(
        "probe",
        settings,
        description="Kernel test service.",
        publishes={EVENTS: [CounterBumped]},
        subscriptions=subscriptions,
        projections=[TotalsProjection()],
        workers=workers,
        migrations=load("probe", "tests.support", "probe_sql"),
        port=port if port is not None else int(os.environ.get("PROBE_PORT", "0")),
        marks=marks,
    )


def command(id: str, counter: str = "c", amount: int = 1, **extra: Any) -> bytes:
    return json.dumps({"id": id, "counter": counter, "amount": amount, **extra}).encode()


if __name__ == "__main__":
    serve("probe", build, Settings)

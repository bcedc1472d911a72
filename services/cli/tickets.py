"""``desk ticket show NUMBER``: one ticket's whole story, across every service's events, in order.
``desk ticket escalate|flag|ask-specialist|findings|respond|resolve``: the exceptions path's
commands, signed with the person's own token (``--token`` or ``DESK_TOKEN``).

Each service keeps its own events; the ticket is their common ``subject``. intake, which numbers
tickets, finds the ticket; the timeline reads each service's event store for events about it and
merges them by time (then by service, in the order a request travels — the order of
``services.SERVICES`` — then by position), and says each one in a line: what happened, who did
it, and why — the rule, the policy version, the cause.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import typer
from rich.table import Table

from services import service_names
from services.cli.context import console, fail, load_settings, plain_row, run_async
from services.dispatch import queries as dispatch
from services.intake import queries as intake
from shared.credentials import sign_command
from shared.database import Connection, connect
from shared.eventstore import EventStore
from shared.kafka import make_producer
from shared.keystore import KeyStore, MasterKeys
from shared.personal import keys_for

app = typer.Typer(help="Tickets: their whole story.", no_args_is_help=True)


@dataclass(frozen=True)
class Entry:
    time: datetime
    service: str
    position: int
    type: str
    data: dict[str, Any]
    event_id: str
    causation_id: str | None

    @property
    def what(self) -> str:
        return self.type.removeprefix("servicedesk.").rsplit(".v", 1)[0]

    def summary(self) -> str:
        describe = _SUMMARIES.get(self.what)
        return describe(self.data) if describe else _generic(self.data)


async def timeline(conn: Connection, ticket_id: str, keys: KeyStore) -> list[Entry]:
    """Every service's events about the ticket (its event store's ``subject``), merged, with
    personal fields opened (``erased`` where the customer's key is gone)."""
    entries: list[Entry] = []
    for rank, name in enumerate(service_names()):
        store = EventStore(name, f"servicedesk/{name}")
        try:
            events = await store.read_subject(conn, ticket_id)
        except asyncpg.UndefinedTableError:
            continue  # the service never ran against this database
        entries += [
            Entry(
                time=e.time,
                service=name,
                position=rank * 10**12 + e.position,
                type=e.type,
                data=json.loads(e.raw)["data"],
                event_id=str(e.id),
                causation_id=e.causation_id,
            )
            for e in events
        ]
    entries.sort(key=lambda e: (e.time, e.position))
    opening = await keys_for(keys, conn, [e.data for e in entries])
    return [replace(e, data=opening.reveal_json(e.data)) for e in entries]


@app.command()
def show(
    number: Annotated[str, typer.Argument(help="The ticket's number, e.g. REQ-2026-000123.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event.")] = False,
) -> None:
    """Print a ticket's timeline: every event of every service about it, in order."""
    settings = load_settings()
    if not settings.database_url:
        raise fail("DATABASE_URL is not set and no `desk up` is running")

    async def go() -> tuple[str | None, list[Entry]]:
        conn = await connect(settings.require_database_url())
        try:
            ticket_id = await intake.ticket_id(conn, number.upper())
            if ticket_id is None:
                return None, []
            return ticket_id, await timeline(
                conn, ticket_id, KeyStore(MasterKeys.from_settings(settings))
            )
        finally:
            await conn.close()

    ticket_id, entries = run_async(go())
    if ticket_id is None:
        raise fail(f"no ticket numbered {number}")
    if as_json:
        for e in entries:
            typer.echo(
                json.dumps(
                    {
                        "time": e.time.isoformat(),
                        "service": e.service,
                        "type": e.type,
                        "id": e.event_id,
                        "cause": e.causation_id,
                        "data": e.data,
                    },
                    ensure_ascii=False,
                )
            )
        return
    table = Table(title=f"{number.upper()}  (ticket {ticket_id})", show_lines=False)
    for column in ("time", "service", "event", "what happened"):
        table.add_column(column, overflow="fold")
    for e in entries:
        plain_row(table, e.time.strftime("%Y-%m-%d %H:%M:%S"), e.service, e.what, e.summary())
    console.print(table)


# --- commands: the exceptions path -------------------------------------------------------------

Token = Annotated[
    str,
    typer.Option(
        envvar="DESK_TOKEN",
        help="Your token (desk token issue): the command acts in its subject's name.",
        show_default=False,
    ),
]
Number = Annotated[str, typer.Argument(help="The ticket's number, e.g. REQ-2026-000123.")]


def send(number: str, kind: str, token: str, **fields: str | None) -> None:
    """Check the command against dispatch's contract, sign it with the token, publish it, and
    print its id; dispatch answers a refusal on tickets.commands.rejected with a reason."""
    body = {"command_id": str(uuid.uuid4()), "type": kind, "ticket_number": number.upper()}
    body |= {k: v for k, v in fields.items() if v is not None}
    value = json.dumps(body, ensure_ascii=False).encode()
    problem = dispatch.command_problem(value)
    if problem is not None:
        raise fail(problem)
    try:
        headers = sign_command(token, value)
    except ValueError as error:
        raise fail(f"--token: {error}") from None
    settings = load_settings()
    if not settings.kafka_bootstrap_servers:
        raise fail("KAFKA_BOOTSTRAP_SERVERS is not set and no `desk up` is running")

    async def publish() -> None:
        producer = make_producer(settings, client_id="desk-ticket")
        await producer.start()
        try:
            topic = settings.topic(dispatch.COMMANDS_TOPIC)
            await producer.send_and_wait(topic, value, key=number.upper().encode(), headers=headers)
        finally:
            await producer.stop()

    run_async(publish())
    typer.echo(f"{kind} {body['command_id']} sent")


@app.command()
def escalate(number: Number, reason: Annotated[str, typer.Option()], token: Token) -> None:
    """Hand the ticket to its group's supervisor (a decision outside your rights)."""
    send(number, "escalate", token, reason=reason)


@app.command()
def flag(number: Number, reason: Annotated[str, typer.Option()], token: Token) -> None:
    """Flag the customer abusive or unreasonable: the ticket goes to the supervisor, and the
    customer's later tickets carry the flag."""
    send(number, "flag_customer", token, reason=reason)


@app.command("ask-specialist")
def ask_specialist(
    number: Number,
    group: Annotated[str, typer.Option(help="The group asked, e.g. network.")],
    question: Annotated[str, typer.Option()],
    token: Token,
) -> None:
    """Ask another group for findings; the ticket stays yours, their answer is timed."""
    send(number, "request_specialist", token, to_group=group, question=question)


@app.command()
def findings(number: Number, text: Annotated[str, typer.Option()], token: Token) -> None:
    """Answer a specialist request of your group."""
    send(number, "provide_findings", token, findings=text)


@app.command()
def respond(
    number: Number,
    token: Token,
    message: Annotated[str | None, typer.Option(help="Your words to the customer.")] = None,
    template: Annotated[
        str | None, typer.Option(help="A standard reply of the policy (replies.templates).")
    ] = None,
) -> None:
    """Reply to the customer: your words, or a standard reply in their language."""
    send(number, "respond", token, message=message, template=template)


@app.command()
def resolve(  # noqa: PLR0917 - typer reads the options from the signature
    number: Number,
    resolution: Annotated[str, typer.Option()],
    token: Token,
    cause: Annotated[str | None, typer.Option(help="Complaints: the cause.")] = None,
    actions: Annotated[str | None, typer.Option(help="Complaints: the actions taken.")] = None,
    compensation: Annotated[str | None, typer.Option(help="Complaints: the compensation.")] = None,
) -> None:
    """Resolve the ticket (a complaint with cause, actions and compensation, as the policy's
    routing.resolution_requires says)."""
    send(
        number,
        "resolve",
        token,
        resolution=resolution,
        cause=cause,
        actions=actions,
        compensation=compensation,
    )


def _generic(data: dict[str, Any]) -> str:
    shown = {
        k: v
        for k, v in data.items()
        if k not in ("ticket_id", "number") and v not in (None, [], "")
    }
    return ", ".join(f"{k}={v}" for k, v in list(shown.items())[:6])


def _policy(data: dict[str, Any]) -> str:
    return f" [policy {data['policy_version']}]" if data.get("policy_version") else ""


_SILENTLY = " (silently: long past due, nobody told)"
"""A backlog the system settled: notify sends no notice of it."""

_FOLLOW_UP_REASONS = {
    "closed": "after it was closed",
    "reopen_window_passed": "after the reopen window of its resolution",
}


_SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "ticket.received": lambda d: (
        f"{d['channel']} request from {d['customer']['name']}: {d['subject']!r}"
        f" (priority {d['priority']}, {d['language']})"
        + (f", follows up {d['follows_up']}" if d.get("follows_up") else "")
    ),
    "ticket.triaged": lambda d: (
        f"{d['complexity']} {d['category']}"
        + (f", {d['complaint_severity']} complaint" if d["complaint"] else "")
        + f" — {d['reason']}{_policy(d)}"
    ),
    "ticket.customer_replied": lambda d: f"customer replied via {d['channel']}: {d['body'][:80]!r}",
    "ticket.classified": lambda d: (
        f"group {d['group_id']} — {d['reason']}{_policy(d)}"
        + (
            f"; CUSTOMER FLAGGED before: {d['customer_flag'][:80]!r}"
            if d.get("customer_flag")
            else ""
        )
    ),
    "ticket.assigned": lambda d: (
        f"assigned to {d['agent_id']} in {d['group_id']} ({d['cause']}; {d['strategy']}: "
        f"{d['reason']})"
    ),
    "ticket.queued": lambda d: f"queued in {d['group_id']} at {d['priority']} — {d['reason']}",
    "ticket.accepted": lambda d: f"accepted by {d['agent_id']}",
    "ticket.responded": lambda d: (
        f"{'first response' if d['first_response'] else 'reply'} by {d['agent_id']}: "
        f"{d['message'][:80]!r}"
    ),
    "ticket.work_started": lambda d: f"work started by {d['agent_id']}",
    "ticket.note_added": lambda d: f"internal note by {d['agent_id']}: {d['note'][:80]!r}",
    "ticket.waiting_for_customer": lambda d: f"waiting for the customer: {d['question'][:80]!r}",
    "ticket.left_unanswered": lambda d: (
        f"no reply in {d['waited']}: left to a person (its resolution needs one)"
        + _SILENTLY * bool(d.get("silent"))
    ),
    "ticket.customer_reminded": lambda d: (
        f"customer reminded: no reply in {d['waited']}"
        + (
            f"; resolved unless they reply within {d['resolves_in']}"
            if d.get("resolves_in")
            else ""
        )
        + _SILENTLY * bool(d.get("silent"))
    ),
    "ticket.resumed": lambda d: f"in progress again ({d['cause']})",
    "ticket.resolved": lambda d: (
        f"resolved by {d['agent_id']}: {d['resolution'][:80]!r}"
        + "".join(f"; {k} {d[k][:60]!r}" for k in ("cause", "actions", "compensation") if d.get(k))
        + (f" — {d['reason']}" if d.get("reason") else "")
        + _SILENTLY * bool(d.get("silent"))
    ),
    "ticket.reopened": lambda d: f"reopened by {d['actor']}: {d['reason'][:80]!r}",
    "ticket.closed": lambda d: (
        f"closed by {d['actor']}"
        + (f": {d['reason']}" if d.get("reason") else "")
        + _SILENTLY * bool(d.get("silent"))
    ),
    "ticket.follow_up_requested": lambda d: (
        f"customer wrote on it {_FOLLOW_UP_REASONS.get(d['reason'], d['reason'])}: a follow-up "
        f"ticket is opened for {d['body'][:80]!r}"
    ),
    "ticket.follow_up_opened": lambda d: (
        f"follow-up {d['follow_up_number']} opened from the customer's reply"
    ),
    "ticket.reassigned": lambda d: (
        f"reassigned by {d['actor']} from {d['from_agent'] or d['from_group']} to {d['to_group']}:"
        f" {d['reason']!r}"
    ),
    "ticket.escalated": lambda d: (
        f"escalated to level {d['level']} ({d['cause']})"
        + (f", to {d['to_agent']}" if d.get("to_agent") else "")
        + (f", to {d['to_group']}" if d.get("to_group") else ", supervisors notified")
    ),
    "ticket.customer_flagged": lambda d: f"CUSTOMER FLAGGED by {d['actor']}: {d['reason'][:80]!r}",
    "ticket.specialist_requested": lambda d: (
        f"{d['actor']} asks {d['to_group']} for findings: {d['question'][:80]!r}"
    ),
    "ticket.findings_provided": lambda d: (
        f"findings from {d['from_group']} by {d['actor']}: {d['findings'][:80]!r}"
    ),
    "ticket.satisfaction_recorded": lambda d: f"satisfaction {d['score']}/5 {d['comment']!r}",
    "sla.clock_started": lambda d: (
        f"{d['metric']} clock{' restarted' if d['run'] > 1 else ''}: target "
        f"{_minutes(d['target_s'])} on calendar {d['calendar']}, due {d['deadline']} "
        f"(rule {d['rule']}){_clock(d)}"
    ),
    "sla.clock_paused": lambda d: (
        f"{d['metric']} clock paused at {_minutes(d['elapsed_s'])} used{_clock(d)}"
    ),
    "sla.clock_resumed": lambda d: f"{d['metric']} clock resumed, due {d['deadline']}{_clock(d)}",
    "sla.clock_warned": lambda d: (
        f"{d['metric']}: {round(d['fraction'] * 100)}% of the target used, due {d['deadline']}"
        f"{_clock(d)}"
    ),
    "sla.clock_breached": lambda d: (
        f"{d['metric']} BREACHED: no fulfilling event within {_minutes(d['target_s'])} of "
        f"business time (due {d['due_at']}){_clock(d)}"
    ),
    "sla.clock_met": lambda d: (
        f"{d['metric']} met{' LATE' if d['late'] else ''} by {d['fulfilled_by']} after "
        f"{_minutes(d['elapsed_s'])} of business time{_clock(d)}"
    ),
    "sla.clock_stopped": lambda d: f"{d['metric']} clock stopped ({d['reason']}){_clock(d)}",
    "sla.escalated": lambda d: (
        f"{d['metric']} escalation level {d['level']} (breached {d['breached_at']}){_clock(d)}"
    ),
    "notification.sent": lambda d: (
        f"{d['template']} ({d['language']}) sent to {d['recipient']} by {d['channel']} "
        f"{d['address']}, attempt {d['attempts']}"
    ),
    "notification.failed": lambda d: (
        f"{d['template']} to {d['recipient']} FAILED ({d['reason']}) after {d['attempts']} "
        f"attempt(s): {d['error'][:100]}"
    ),
}


def _minutes(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:g} min" if minutes < 120 else f"{minutes / 60:g} h"


def _clock(data: dict[str, Any]) -> str:
    return (
        f" [cause {data['cause_event_id']}, policy {data['policy_version']}, "
        f"calendar {data.get('calendar_version', '?')}]"
    )

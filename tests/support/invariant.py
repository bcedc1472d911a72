"""The promise a running system keeps whatever happened to it, checked from outside.

From the event stores (PostgreSQL), the topics (an :class:`~tests.support.observer.Observer`),
the consumer groups' offsets and the notice receivers' journal — never from what a service says
about itself — :class:`Invariant` measures:

* every request the adapter got accepted has exactly one ticket (``requests_lost``);
* every effect — a ticket recorded, triaged, classified, a clock mark, a command's answer, a
  notice — is in its store at most once (``duplicated_effects``) and every effect owed by an
  earlier one is there (``effects_missing``);
* every stored event is on its public topic at least once; a repeat carries the same event id
  (``events_missing_on_topics``; ``topic_repeats`` is a cost, not a loss);
* every notice owed was made, sent and received, counted at the receivers by Message-ID /
  Idempotency-Key (``notices_missing``; ``notice_repeats`` — the same key arriving again — is a
  cost the receiver drops);
* every consumer group's lag is zero;
* the dead-letter topics and tables hold nothing but poison records, each with its reason, and
  every consumer of a poisoned topic answered its poison (a dead letter or a reason-coded
  rejection), or skipped it where skipping an event type it does not handle is its contract.

:meth:`Invariant.wait` polls until all of it holds and says how long that took.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError

from shared.consumer import EventSubscription
from shared.database import connect
from shared.service import Service
from shared.settings import Settings
from tests.support.observer import ConsumerLag, Observer, Seen
from tests.support.receivers import Receivers
from tests.support.traffic import Adapter, AgentDesk, Poison


@dataclass
class Figures:
    """One measurement; :attr:`holds` when the promise is kept."""

    requests_accepted: int = 0
    requests_lost: int = 0
    tickets: int = 0
    events_stored: int = 0
    duplicated_effects: int = 0
    effects_missing: int = 0
    events_missing_on_topics: int = 0
    topic_repeats: int = 0
    notices: int = 0
    notices_missing: int = 0
    notices_failed: int = 0
    notice_repeats: int = 0
    answer_repeats: int = 0
    commands: int = 0
    consumer_lag: dict[str, int] = field(default_factory=dict)
    unexpected_dead_letters: int = 0
    poison_unanswered: int = 0
    recovery_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        """The figures a report shows (JSON-ready)."""
        return {
            "requests_accepted": self.requests_accepted,
            "requests_lost": self.requests_lost,
            "duplicated_effects": self.duplicated_effects,
            "effects_missing": self.effects_missing,
            "events_stored": self.events_stored,
            "events_missing_on_topics": self.events_missing_on_topics,
            "topic_repeats": self.topic_repeats,
            "notices": self.notices,
            "notices_missing": self.notices_missing,
            "notice_repeats": self.notice_repeats,
            "answer_repeats": self.answer_repeats,
            "commands": self.commands,
            "consumer_lag": sum(self.consumer_lag.values()),
            "unexpected_dead_letters": self.unexpected_dead_letters,
            "poison_unanswered": self.poison_unanswered,
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 1),
        }


@dataclass(frozen=True, slots=True)
class Stored:
    event_id: str
    type: str
    stream_id: str
    causation_id: str | None
    data: dict[str, Any]

    @property
    def kind(self) -> str:
        """``ticket.received`` of ``servicedesk.ticket.received.v1``."""
        return self.type.removeprefix("servicedesk.").rpartition(".v")[0]


_ANSWERS = ("ticket_command.rejected", "agent_command.rejected")


def effect_key(service: str, event: Stored) -> tuple[Any, ...] | None:
    """What an event *does*, so the same effect recorded twice shows as the same key (None:
    an answer, whose repeats are counted apart)."""
    kind, data = event.kind, event.data
    if service == "intake":
        return _intake_effect(event)
    if service == "sla":
        return _clock_effect(event)
    if service == "notify":
        return (kind, data.get("notice_key"))
    if kind in _ANSWERS:
        return None
    if kind == "ticket.escalated":
        return (kind, event.stream_id, data.get("level"))  # each level once per ticket
    return (kind, event.stream_id, event.causation_id)


def _intake_effect(event: Stored) -> tuple[Any, ...]:
    kind, data = event.kind, event.data
    if kind in ("ticket.received", "ticket.customer_replied"):
        return (kind, data.get("channel"), data.get("channel_message_id"))
    if kind == "ticket.triaged":
        return (kind, data.get("ticket_id"))
    return (kind, event.stream_id)


def _clock_effect(event: Stored) -> tuple[Any, ...]:
    """A clock mark: each warning fraction, breach, fulfilment, stop once per run of a clock;
    each escalation level once per clock."""
    kind, data = event.kind, event.data
    clock = (data.get("clock_id"), data.get("run"))
    if kind == "sla.clock_warned":
        return (kind, *clock, data.get("fraction"))
    if kind in ("sla.clock_paused", "sla.clock_resumed"):
        return (kind, *clock, event.causation_id)
    if kind == "sla.escalated":
        return (kind, data.get("clock_id"), data.get("level"))
    return (kind, *clock)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A row of notify's ``deliveries``: one notice."""

    notice_key: str
    cause_event_id: str
    template: str
    status: str
    channel: str | None = None
    """``messages`` notices are events on ``customer.messages``: no receiver counts them, the
    check of every stored event on its topic does."""


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """A row of a service's ``dead_letters`` table."""

    service: str
    topic: str
    reason: str
    headers: dict[str, str]


@dataclass
class Snapshot:
    """Everything the promise is judged on, read at one moment from outside the services."""

    events: dict[str, list[Stored]]
    """Each service's event store, in commit order."""
    deliveries: list[Delivery] = field(default_factory=list)
    waiting_for_receipt: int = 0
    dead_letters: list[DeadLetterRow] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)
    topics: dict[str, list[Seen]] = field(default_factory=dict)
    """Physical topic -> the records on it."""
    arrived: Counter[str] = field(default_factory=Counter)
    """Notice key -> times it reached a receiver."""
    accepted: Collection[str] = ()
    """Request keys (``<channel>:<channel_message_id>``) the broker acknowledged."""
    commands: Collection[str] = ()
    """Command ids the broker acknowledged."""
    poisons: Sequence[Poison] = ()
    unreachable: list[str] = field(default_factory=list)
    """What could not be read (the database or the broker was away)."""

    def of(self, service: str, *kinds: str) -> list[Stored]:
        return [e for e in self.events.get(service, ()) if not kinds or e.kind in kinds]


def judge(snapshot: Snapshot, services: Mapping[str, Service]) -> Figures:
    """The figures of a snapshot (pure: what :meth:`Invariant.measure` and the checker's own
    tests share). ``services`` give each event type's topic and each topic's consumers."""
    figures = Figures(problems=list(snapshot.unreachable))
    if snapshot.unreachable:
        return figures
    _requests(snapshot, figures)
    _effects(snapshot, figures)
    _answers(snapshot, figures)
    _topics(snapshot, services, figures)
    _notices(snapshot, figures)
    _dead_letters(snapshot, services, figures)
    figures.consumer_lag = dict(snapshot.lag)
    behind = {g: n for g, n in snapshot.lag.items() if n}
    if behind:
        figures.problems.append(f"consumers behind: {behind}")
    return figures


def _requests(snapshot: Snapshot, figures: Figures) -> None:
    received = Counter(
        (e.data.get("channel"), e.data.get("channel_message_id"))
        for e in snapshot.of("intake", "ticket.received")
    )
    figures.requests_accepted = len(snapshot.accepted)
    figures.tickets = sum(received.values())
    lost = [k for k in snapshot.accepted if not received[_channel_message(k)]]
    figures.requests_lost = len(lost)
    if lost:
        figures.problems.append(f"{len(lost)} accepted requests have no ticket: {lost[:3]}")


def _effects(snapshot: Snapshot, figures: Figures) -> None:
    for name, events in snapshot.events.items():
        figures.events_stored += len(events)
        keys = Counter(k for e in events if (k := effect_key(name, e)) is not None)
        twice = {k: n for k, n in keys.items() if n > 1}
        figures.duplicated_effects += sum(n - 1 for n in twice.values())
        if twice:
            figures.problems.append(f"{name} recorded effects twice: {list(twice)[:3]}")
    triaged = {e.data["ticket_id"] for e in snapshot.of("intake", "ticket.triaged")}
    classified = {e.data["ticket_id"] for e in snapshot.of("dispatch", "ticket.classified")}
    clocked = {
        e.data["ticket_id"]
        for e in snapshot.of("sla", "sla.clock_started")
        if e.data.get("metric") == "resolution"
    }
    _missing(figures, "triaged tickets never classified", triaged - classified)
    _missing(figures, "classified tickets without a resolution clock", classified - clocked)


def _answers(snapshot: Snapshot, figures: Figures) -> None:
    """Each command accepted by the broker: applied (events caused by it) or refused (one
    rejection naming it) — not both, not neither."""
    commands = snapshot.commands
    applied = {e.causation_id for e in snapshot.of("dispatch") if e.kind not in _ANSWERS}
    refusals = Counter(e.data.get("command_id") for e in snapshot.of("dispatch", *_ANSWERS))
    figures.commands = len(commands)
    figures.answer_repeats += sum(n - 1 for c, n in refusals.items() if c in commands)
    both = [c for c in commands if c in applied and refusals[c]]
    figures.duplicated_effects += len(both)
    if both:
        figures.problems.append(f"commands both applied and refused: {both[:3]}")
    _missing(
        figures,
        "commands never answered",
        {c for c in commands if c not in applied and not refusals[c]},
    )


def _missing(figures: Figures, what: str, missing: Iterable[str]) -> None:
    found = sorted(missing)
    figures.effects_missing += len(found)
    if found:
        figures.problems.append(f"{len(found)} {what}: {found[:3]}")


def _topics(snapshot: Snapshot, services: Mapping[str, Service], figures: Figures) -> None:
    on_topic: dict[str, Counter[str]] = {}
    for name, events in snapshot.events.items():
        missing: list[str] = []
        for event in events:
            topic = services[name].topic_for(event.type)
            if topic not in on_topic:
                on_topic[topic] = Counter(
                    s.event_id for s in snapshot.topics.get(topic, ()) if s.event_id
                )
            count = on_topic[topic][event.event_id]
            if count == 0:
                missing.append(event.event_id)
            figures.topic_repeats += max(0, count - 1)
        figures.events_missing_on_topics += len(missing)
        if missing:
            figures.problems.append(
                f"{len(missing)} {name} events stored but never published: {missing[:3]}"
            )


def _notices(snapshot: Snapshot, figures: Figures) -> None:
    deliveries, arrived = snapshot.deliveries, snapshot.arrived
    made = {(d.cause_event_id, d.template) for d in deliveries}
    owed = [(e.event_id, "acknowledgement") for e in snapshot.of("intake", "ticket.triaged")]
    owed += [(e.event_id, "assignment") for e in snapshot.of("dispatch", "ticket.assigned")]
    not_made = [o for o in owed if o not in made]
    sent = {e.data["notice_key"] for e in snapshot.of("notify", "notification.sent")}
    failed = {e.data["notice_key"] for e in snapshot.of("notify", "notification.failed")}
    unsent = [d.notice_key for d in deliveries if d.status in ("pending", "sending")]
    published = {d.notice_key for d in deliveries if d.channel == "messages"}
    not_received = sorted(k for k in sent - published if arrived[k] == 0)
    keys = {d.notice_key for d in deliveries}
    strangers = sorted(k for k in arrived if k not in keys)
    figures.notices = len(deliveries)
    figures.notices_failed = len(failed)
    figures.notices_missing = len(not_made) + len(unsent) + len(not_received)
    figures.notice_repeats = sum(n - 1 for n in arrived.values())
    for what, items in (
        ("notices owed but never made", not_made),
        ("notices not sent yet", unsent),
        ("notices recorded as sent that never arrived", not_received),
        ("notices failed", sorted(failed)),
        ("notices arrived that notify never made", strangers),
    ):
        if items:
            figures.problems.append(f"{len(items)} {what}: {list(items)[:3]}")
    if snapshot.waiting_for_receipt:
        waiting = snapshot.waiting_for_receipt
        figures.problems.append(
            f"{waiting} events still wait for their ticket's receipt or routing"
        )


def _dead_letters(snapshot: Snapshot, services: Mapping[str, Service], figures: Figures) -> None:
    """Only poison in the dead-letter topics and tables, each with its reason; every consumer
    of a poisoned topic answered its poison."""
    markers = {p.marker for p in snapshot.poisons}
    unexpected: list[str] = []
    answered: set[tuple[str, str]] = set()
    for topic, records in snapshot.topics.items():
        if not topic.endswith(".dlq"):
            continue
        for seen in records:
            marker = seen.headers.get("x-desk-poison")
            if marker not in markers or not seen.headers.get("dlq_reason"):
                unexpected.append(f"{topic}:{seen.offset} ({seen.headers.get('dlq_reason')})")
            else:
                answered.add((marker, seen.headers.get("dlq_consumer", "")))
    for row in snapshot.dead_letters:
        if row.headers.get("x-desk-poison") not in markers or not row.reason:
            unexpected.append(f"{row.service}.dead_letters: {row.topic} {row.reason}")
    figures.unexpected_dead_letters = len(unexpected)
    if unexpected:
        figures.problems.append(f"{len(unexpected)} unexpected dead letters: {unexpected[:3]}")
    rejected = {e.stream_id for name in ("intake", "dispatch") for e in snapshot.of(name)}
    unanswered = [
        f"{p.kind} on {p.topic} by {runner.name}"
        for p in snapshot.poisons
        for service in services.values()
        for runner in service.consumers
        if p.topic in runner.topics
        and (p.marker, runner.name) not in answered
        and f"rejection-{p.topic}-{p.partition}-{p.offset}" not in rejected
        and not _may_skip(runner.subscription, p)
    ]
    figures.poison_unanswered = len(unanswered)
    if unanswered:
        figures.problems.append(f"{len(unanswered)} poison records unanswered: {unanswered}")


class Invariant:
    """Reads a running system from outside and judges it (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        services: Sequence[Service],
        observer: Observer,
        lag: ConsumerLag,
        receivers: Receivers,
        adapter: Adapter,
        desk: AgentDesk | None = None,
    ) -> None:
        self.settings = settings
        self.services = {s.name: s for s in services}
        self.observer = observer
        self.lag = lag
        self.receivers = receivers
        self.adapter = adapter
        self.desk = desk
        self.poisons: list[Poison] = []
        self._events: dict[str, list[Stored]] = {name: [] for name in self.services}
        self._read_to: dict[str, int] = dict.fromkeys(self.services, 0)

    async def wait(self, timeout: float, since: float | None = None) -> Figures:
        """Measure until the promise holds or ``timeout`` s pass; ``recovery_s`` counts from
        ``since`` (wall time, e.g. when a fault ended) to the first measurement that held."""
        started = since if since is not None else time.time()
        deadline = time.monotonic() + timeout
        while True:
            figures = await self.measure()
            if figures.holds:
                figures.recovery_s = time.time() - started
                return figures
            if time.monotonic() > deadline:
                return figures
            await asyncio.sleep(1.0)

    async def measure(self) -> Figures:
        return judge(await self.read(), self.services)

    def events(self, service: str, *kinds: str) -> list[Stored]:
        """A service's stored events (of these kinds), as of the last read."""
        return [e for e in self._events[service] if not kinds or e.kind in kinds]

    async def read(self) -> Snapshot:
        snapshot = Snapshot(
            events=self._events,
            topics=self.observer.seen,
            arrived=self.receivers.counts(),
            accepted=list(self.adapter.accepted),
            commands=list(self.desk.commands) if self.desk else [],
            poisons=list(self.poisons),
        )
        try:
            conn = await connect(self.settings.require_database_url())
            try:
                await self._read_tables(conn, snapshot)
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            snapshot.unreachable.append(f"database unreachable: {error!r}")
        try:
            snapshot.lag = await self.lag.lag()
        except KafkaError as error:
            snapshot.unreachable.append(f"broker unreachable: {error!r}")
        return snapshot

    async def _read_tables(self, conn: Any, snapshot: Snapshot) -> None:
        for name in self.services:
            # Appended since the last read: positions are commit order.
            rows = await conn.fetch(
                "SELECT position, event_id::text, type, stream_id, causation_id, "
                f"(envelope->'data')::text FROM {name}.events WHERE position > $1 "
                "ORDER BY position",
                self._read_to[name],
            )
            for position, event_id, type_, stream, cause, data in rows:
                self._events[name].append(Stored(event_id, type_, stream, cause, json.loads(data)))
                self._read_to[name] = position
            for row in await conn.fetch(
                f"SELECT topic, reason, headers::text FROM {name}.dead_letters"
            ):
                headers = dict(json.loads(row["headers"]))
                snapshot.dead_letters.append(
                    DeadLetterRow(name, row["topic"], row["reason"], headers)
                )
        snapshot.deliveries = [
            Delivery(*row)
            for row in await conn.fetch(
                "SELECT notice_key, cause_event_id, template, status, channel "
                "FROM notify.deliveries"
            )
        ]
        snapshot.waiting_for_receipt = await conn.fetchval(
            "SELECT count(*) FROM notify.waiting_events"
        )


def _channel_message(key: str) -> tuple[str, str]:
    """(channel, channel message id) of a request key ``<channel>:<channel_message_id>``."""
    channel, _, message_id = key.partition(":")
    return channel, message_id


def _may_skip(subscription: Any, poison: Poison) -> bool:
    """An event type a consumer does not handle is skipped by contract (it reads past it)."""
    if not isinstance(subscription, EventSubscription) or not subscription.accepts:
        return False
    if poison.kind == "unknown_type":
        return True
    return poison.kind == "unknown_version" and (
        poison.event_type.rpartition(".v")[0] not in subscription.accepts
    )

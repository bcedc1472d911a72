"""What-if: past tickets' lifecycle events replayed through the SLA rules of another policy.

Pure. A ticket's history — dispatch's events, each with the time dispatch recorded it and its
id, exactly what the live consumer was handed — goes through the same :class:`Timekeeper` and
:class:`SlaClock` the sla service runs, with a recorder that keeps nothing: calendars, pauses,
reopen restarts, late fulfilment and the ladder apply as they do live. Before each event the
clocks fire what fell due, as the timer worker fires each mark at its due time; at the end they
fire what is due by ``until`` (now).

The history is taken as it happened: an escalation the proposed ladder would have caused at
another moment, which dispatch would then have acted on, is not re-simulated — the tickets'
groups follow their recorded events.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.policy.sla import SlaPolicy
from services.sla.clocks import SlaClock
from services.sla.timekeeper import TIMED, Timekeeper
from services.sla.whatif import Counted, Key, Outcome, Verdict, judge
from shared.events import EVENTS, EventData


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """One of dispatch's ticket events as sla took it: the event, when and its id."""

    event: EventData
    at: datetime
    event_id: str


def _keep_nothing(
    stream_id: str,
    events: Sequence[EventData],
    *,
    expected_version: int | None,
    subject: str | None = None,
) -> None:
    """The recorder of a replay: the timekeeper folds its decisions into the clocks itself."""


def replay(
    policy: SlaPolicy | None,
    version: str,
    histories: Iterable[Sequence[Lifecycle]],
    until: datetime,
) -> Iterator[list[SlaClock]]:
    """Each ticket's clocks as the sla service would keep them had ``policy`` been in force,
    one history (one ticket) after another."""
    keeper = Timekeeper(policy, version, {}, {})
    for history in histories:
        keeper.forget()
        ticket_id = ""
        for item in history:
            if not isinstance(item.event, TIMED):
                continue
            ticket_id = str(getattr(item.event, "ticket_id", ""))
            keeper.fire_due(ticket_id, item.at, _keep_nothing)
            keeper.on(item.event, item.at, item.event_id, _keep_nothing)
        keeper.fire_due(ticket_id, until, _keep_nothing)
        yield list(keeper.clocks.values())


Stored = tuple[str, datetime, str, str]
"""A stored lifecycle event as read from dispatch's store: type, time, id and data (JSON)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Some tickets to replay under a proposal, and how their clocks count now (``actual``:
    those that count since ``since``)."""

    policy: SlaPolicy | None
    version: str
    stories: Sequence[Sequence[Stored]]
    until: datetime
    since: datetime
    actual: dict[Key, Counted]


def replayed(chunk: Chunk) -> Verdict:
    """Decode and replay a chunk of tickets, and judge their clocks against how they count
    now. What-if runs this in worker processes: what travels between processes is the stored
    events and the verdict, not a clock per ticket."""
    histories = (
        [
            Lifecycle(EVENTS.decode_json(kind, data), at, event_id)
            for kind, at, event_id, data in story
        ]
        for story in chunk.stories
    )
    proposed = (
        Outcome.of(clock)
        for clocks in replay(chunk.policy, chunk.version, histories, chunk.until)
        for clock in clocks
    )
    return judge(proposed, chunk.actual, chunk.since)

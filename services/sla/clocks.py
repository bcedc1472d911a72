"""One SLA clock (a ticket × metric): its state, how its events change it, and what is due.

A clock counts business time of its calendar while it runs. Its *marks* are amounts of elapsed
business time at which something fires: each warning fraction of the target, the breach at the
target, and each escalation level after the breach. The next unfired mark, projected through the
calendar onto wall time, is the clock's timer (``due_at``); the timer worker fires everything
whose mark has passed, each mark once. Pure; no I/O.

Rules worth knowing:

- a clock keeps the terms (target, calendar, warnings, ladder) it started with, whatever the
  policy file says later;
- pausing stops both the target and the ladder; fulfilling the metric stops everything;
- a fulfilling event after the breach does not undo it: the clock records ``met`` with
  ``late = true`` and compliance counts it as breached. If the fulfilling event is past the
  deadline but no breach was recorded yet (sla was down), the breach is recorded first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, Field

from services.policy.calendar import BusinessCalendar
from services.policy.sla import CalendarPolicy
from services.sla.events import (
    ClockBreached,
    ClockEvent,
    ClockMet,
    ClockPaused,
    ClockResumed,
    ClockStarted,
    ClockStopped,
    ClockWarned,
    EscalationRaised,
    LadderLevel,
)
from shared.events import EventData

_EPSILON_S = 0.001
"""Float slack when comparing elapsed business seconds with a mark."""
_EPSILON = timedelta(seconds=_EPSILON_S)


@cache
def _calendar(definition: str) -> BusinessCalendar:
    return BusinessCalendar(CalendarPolicy.model_validate_json(definition))


@cache
def _canonical(text: str) -> str:
    return CalendarPolicy.model_validate_json(text).model_dump_json()


def canonical_calendar(definition: Mapping[str, object]) -> str:
    """A calendar definition as a clock keeps it: validated once per distinct definition (a
    clock starts with its calendar's definition copied into its event)."""
    return _canonical(json.dumps(definition, sort_keys=True, default=str))


_BY_VERSION: dict[str, str] = {}


def calendar_text(version: str, definition: Mapping[str, object]) -> str:
    """A calendar definition as a clock keeps it (canonical JSON), looked up by the calendar's
    version — a hash of that definition — once seen: every clock start carries both."""
    known = _BY_VERSION.get(version)
    if known is None:
        known = canonical_calendar(definition)
        if version and len(_BY_VERSION) < 1024:
            _BY_VERSION[version] = known
    return known


def business_calendar(version: str, definition: Mapping[str, object]) -> BusinessCalendar:
    return _calendar(calendar_text(version, definition))


class SlaClock(BaseModel):
    """Folded state of one clock stream."""

    clock_id: str
    ticket_id: str
    number: str
    metric: str
    run: int
    policy_version: str
    rule: str = ""
    calendar: str
    calendar_version: str
    calendar_definition: str
    target_s: float
    warnings: list[float]
    ladder: list[LadderLevel]
    pauses_when_waiting: bool
    fulfilled_by: list[str]
    restarts_on_reopen: bool
    started_at: datetime
    cause_event_id: str
    group_id: str
    agent_id: str | None
    running_since: datetime | None
    elapsed_s: float = 0.0
    warned: list[float] = []
    breached_at: datetime | None = None
    level: int = 0
    met_at: datetime | None = None
    late: bool = False
    stopped: bool = False
    wall_s: float | None = None
    repeats: bool = False
    version: int = 0
    due_cache: tuple[datetime | None] | None = Field(default=None, exclude=True, repr=False)
    """``due_at`` once known (None: not computed since the last change); never stored."""

    # --- reading ---------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self.met_at is None and not self.stopped

    @property
    def follows_ticket(self) -> bool:
        """Whether the clock answers to whoever has the ticket now; a specialist request's
        answers to the group asked, whoever has the ticket."""
        return "findings_provided" not in self.fulfilled_by

    def _who(self) -> dict[str, Any]:
        """Who answers for the clock, as its events say."""
        return {
            "group_id": self.group_id,
            "agent_id": self.agent_id,
            "specialists": not self.follows_ticket,
        }

    @property
    def status(self) -> str:
        if self.met_at is not None:
            return "met_late" if self.late else "met"
        if self.stopped:
            return "stopped"
        if self.breached_at is not None:
            return "breached"
        return "running" if self.running_since is not None else "paused"

    @property
    def has_outcome(self) -> bool:
        """Whether this run counts in compliance: met, or breached (even if met late after)."""
        return self.met_at is not None or self.breached_at is not None

    @property
    def business(self) -> BusinessCalendar:
        return _calendar(self.calendar_definition)

    def elapsed_at(self, moment: datetime) -> float:
        """Business seconds counted by ``moment``."""
        if self.running_since is None:
            return self.elapsed_s
        return self.elapsed_s + self.business.seconds_between(self.running_since, moment)

    def when(self, mark_s: float) -> datetime | None:
        """Wall time at which ``mark_s`` business seconds will have elapsed (None if paused)."""
        if self.running_since is None:
            return None
        return self.business.add(self.running_since, max(0.0, mark_s - self.elapsed_s))

    @property
    def deadline(self) -> datetime | None:
        return self.when(self.target_s)

    def marks(self) -> list[tuple[float, str]]:
        """Unfired marks in firing order: (business seconds, what)."""
        if not self.open:
            return []
        pending: list[tuple[float, str]] = []
        if self.breached_at is None:
            pending += [(f * self.target_s, f"warning:{f}") for f in self.warnings]
            pending = [(m, w) for m, w in pending if float(w[8:]) not in self.warned]
            pending.append((self.target_s, "breach"))
        pending += [
            (self.target_s + step.after_s, f"level:{step.level}")
            for step in self.ladder
            if step.level > self.level
        ]
        return sorted(pending, key=lambda mark: mark[0])

    @property
    def due_at(self) -> datetime | None:
        """The clock's timer: when its next mark passes (None: nothing left, or paused).

        Kept until the clock changes: a replay asks it before every event of the ticket.
        """
        if self.due_cache is None:
            marks = self.marks()
            self.due_cache = (self.when(marks[0][0]) if marks else None,)
        return self.due_cache[0]

    # --- deciding --------------------------------------------------------------------------

    def _ids(self) -> dict[str, object]:
        return {
            "ticket_id": self.ticket_id,
            "number": self.number,
            "metric": self.metric,
            "clock_id": self.clock_id,
            "run": self.run,
            "cause_event_id": self.cause_event_id,
            "policy_version": self.policy_version,
            "calendar_version": self.calendar_version,
        }

    def fire(self, now: datetime) -> list[EventData]:
        """Everything whose mark has passed by ``now``, in order, each once — but a warning
        whose breach fires with it (sla was stopped or behind) is stale: the breach says more,
        and the assignee would get both at once."""
        due = self.due_at
        if due is None or due > now + _EPSILON:
            return []
        elapsed = self.elapsed_at(now)
        passed = [(mark, what) for mark, what in self.marks() if mark <= elapsed + _EPSILON_S]
        if any(what == "breach" for _, what in passed):
            passed = [(mark, what) for mark, what in passed if not what.startswith("warning:")]
        events: list[EventData] = []
        for mark, what in passed:
            due = self.when(mark)
            assert due is not None
            events.append(self._mark_event(what, due))
        if self.repeats and any(isinstance(e, ClockBreached) for e in events):
            # From now, not from the breach: a clock fired late (sla was down) owes one
            # notice for the quiet it missed, not one per period of it.
            events += self.restart(
                max(now, self.started_at), self.cause_event_id, reason="repeated"
            )
        return events

    def _mark_event(self, what: str, due: datetime) -> EventData:
        ids = self._ids()
        who = self._who()
        if what.startswith("warning:"):
            deadline = self.deadline
            assert deadline is not None
            return ClockWarned(
                **ids, **who, fraction=float(what[8:]), due_at=due, deadline=deadline
            )
        if what == "breach":
            return ClockBreached(**ids, **who, due_at=due, target_s=self.target_s)
        breached_at = self.breached_at or self.deadline
        assert breached_at is not None
        return EscalationRaised(
            ticket_id=self.ticket_id,
            number=self.number,
            metric=self.metric,
            level=int(what[6:]),
            clock_id=self.clock_id,
            breached_at=breached_at,
            cause_event_id=self.cause_event_id,
            policy_version=self.policy_version,
            calendar_version=self.calendar_version,
            due_at=due,
            **who,
        )

    def pause(self, at: datetime, cause_event_id: str) -> list[EventData]:
        if not (self.open and self.pauses_when_waiting and self.running_since is not None):
            return []
        ids = {**self._ids(), "cause_event_id": cause_event_id}
        return [ClockPaused(**ids, at=at, elapsed_s=self.elapsed_at(at))]

    def resume(self, at: datetime, cause_event_id: str) -> list[EventData]:
        """Run again from ``at`` — or from the clock's start, if that is later (a request
        received a few minutes ahead of intake's clock, paused and resumed before then): a
        pause never brings a deadline forward."""
        if not self.open or self.running_since is not None:
            return []
        since = max(at, self.started_at)
        deadline = self.business.add(since, max(0.0, self.target_s - self.elapsed_s))
        ids = {**self._ids(), "cause_event_id": cause_event_id}
        return [ClockResumed(**ids, at=since, elapsed_s=self.elapsed_s, deadline=deadline)]

    def fulfil(self, at: datetime, by: str, cause_event_id: str) -> list[EventData]:
        if not self.open:
            return []
        elapsed = self.elapsed_at(at)
        ids = {**self._ids(), "cause_event_id": cause_event_id}
        who = self._who()
        events: list[EventData] = []
        late = self.breached_at is not None
        if not late and elapsed > self.target_s + _EPSILON_S:
            due = self.deadline or at
            events.append(ClockBreached(**ids, **who, due_at=due, target_s=self.target_s))
            late = True
        wall = max(0.0, (at - self.started_at).total_seconds())  # met before it started: 0
        events.append(
            ClockMet(
                **ids, **who, at=at, elapsed_s=elapsed, wall_s=wall, late=late, fulfilled_by=by
            )
        )
        return events

    def stop(self, at: datetime, reason: str, cause_event_id: str) -> list[EventData]:
        if not self.open:
            return []
        ids = {**self._ids(), "cause_event_id": cause_event_id}
        if reason != "updated":
            return [ClockStopped(**ids, at=at, reason=reason)]
        # The period's outcome is judged here, where its elapsed business time is known: the
        # timer may not have fired its breach yet (it waits for the ticket's partition to be
        # read past the due moment), and the projections must not guess.
        in_time = self.breached_at is None and self.elapsed_at(at) <= self.target_s + _EPSILON_S
        agent = self.agent_id if self.follows_ticket else None
        return [ClockStopped(**ids, at=at, reason=reason, in_time=in_time, agent_id=agent)]

    def restart(
        self,
        at: datetime,
        cause_event_id: str,
        *,
        reason: Literal["reopened", "updated", "repeated"] = "reopened",
    ) -> list[EventData]:
        """Start again from zero with the same terms (a reopened ticket's resolution clock; the
        quiet since the customer's last update, or since its last breach)."""
        events = self.stop(at, reason, cause_event_id)
        deadline = self.business.add(at, self.target_s)
        events.append(
            ClockStarted(
                **{**self._ids(), "cause_event_id": cause_event_id, "run": self.run + 1},
                started_at=at,
                deadline=deadline,
                target_s=self.target_s,
                rule=reason if reason == "reopened" else self.rule,
                calendar=self.calendar,
                calendar_definition=_json_object(self.calendar_definition),
                warnings=self.warnings,
                ladder=self.ladder,
                pauses_when_waiting=self.pauses_when_waiting,
                fulfilled_by=self.fulfilled_by,
                restarts_on_reopen=self.restarts_on_reopen,
                repeats=self.repeats,
                group_id=self.group_id,
                agent_id=self.agent_id,
            )
        )
        return events

    # --- evolving --------------------------------------------------------------------------

    @classmethod
    def started(cls, event: ClockStarted, version: int = 1) -> SlaClock:
        """The clock a start event begins. Built without validating again: every value comes
        from the event, validated when it was made or read (a what-if starts hundreds of
        thousands); the lists are copied, the clock's own."""
        return cls.model_construct(
            version=version,
            clock_id=event.clock_id,
            ticket_id=event.ticket_id,
            number=event.number,
            metric=event.metric,
            run=event.run,
            policy_version=event.policy_version,
            rule=event.rule,
            calendar=event.calendar,
            calendar_version=event.calendar_version,
            calendar_definition=calendar_text(event.calendar_version, event.calendar_definition),
            target_s=event.target_s,
            warnings=list(event.warnings),
            ladder=list(event.ladder),
            pauses_when_waiting=event.pauses_when_waiting,
            fulfilled_by=list(event.fulfilled_by),
            restarts_on_reopen=event.restarts_on_reopen,
            repeats=event.repeats,
            started_at=event.started_at,
            cause_event_id=event.cause_event_id,
            group_id=event.group_id,
            agent_id=event.agent_id,
            running_since=event.started_at,
        )

    def apply(self, event: EventData) -> SlaClock:
        """Evolve by one event; returns the clock (a new one for a restart)."""
        if isinstance(event, ClockStarted):
            return SlaClock.started(event, self.version + 1)
        self.due_cache = None
        self.version += 1
        if isinstance(event, ClockEvent) and not isinstance(
            event, ClockWarned | ClockBreached | ClockMet
        ):
            self.cause_event_id = event.cause_event_id
        if isinstance(event, ClockWarned | ClockBreached | ClockMet | EscalationRaised):
            self.group_id, self.agent_id = event.group_id, event.agent_id
        match event:
            case ClockPaused():
                self.elapsed_s, self.running_since = event.elapsed_s, None
            case ClockResumed():
                self.elapsed_s, self.running_since = event.elapsed_s, event.at
            case ClockWarned():
                self.warned = [*self.warned, event.fraction]
            case ClockBreached():
                self.breached_at = event.due_at
            case EscalationRaised():
                self.level = max(self.level, event.level)
            case ClockMet():
                self.met_at, self.late, self.wall_s = event.at, event.late, event.wall_s
                self.elapsed_s, self.running_since = event.elapsed_s, None
            case ClockStopped():
                self._stop(event)
            case _:
                pass
        return self

    def _stop(self, event: ClockStopped) -> None:
        judged = event.reason == "updated" and not self.has_outcome
        # The customer heard from the desk: within the target this quiet period was met; after
        # it, breached at its deadline (the timer had not fired yet), read while it still runs.
        if judged and event.in_time is False:
            self.breached_at = self.deadline or event.at
        elif judged:
            self.met_at = event.at
            self.wall_s = (event.at - self.started_at).total_seconds()
        self.stopped = True
        self.elapsed_s = self.elapsed_at(event.at)
        self.running_since = None


def fold(clock: SlaClock | None, event: EventData) -> SlaClock:
    """Evolve a clock, or begin one (a stream starts with :class:`ClockStarted`)."""
    if clock is not None:
        return clock.apply(event)
    if not isinstance(event, ClockStarted):
        raise ValueError(f"a clock stream must begin with clock_started, not {event.event_type()}")
    return SlaClock.started(event)


def _json_object(text: str) -> dict[str, object]:
    loaded: dict[str, object] = CalendarPolicy.model_validate_json(text).model_dump(mode="json")
    return loaded

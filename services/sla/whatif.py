"""What-if figures: compliance per metric, group and day under the proposed policy beside the
actual one, and the clocks whose outcome would change, with why. Pure.

A clock counts the way ``desk sla report`` counts a run (:mod:`services.sla.report`): met when
met before its deadline, breached when it breached (even if fulfilled late), on the UTC day of
its fulfilment, else of its breach; clocks with neither do not count yet. What-if replays each
clock to its last run, so both sides count each clock's last run only (the report counts every
run: a repeating metric's earlier quiet periods are not compared).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from services.sla.clocks import SlaClock
from services.sla.report import Compliance

Counted = Literal["met", "breached"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one clock counts, and the terms it ran under."""

    ticket_id: str
    number: str
    metric: str
    group_id: str
    counted: Counted | None
    at: datetime | None
    """When it counts (its fulfilment, else its breach)."""
    rule: str
    target_s: float
    calendar: str
    elapsed_s: float
    breached_at: datetime | None

    @classmethod
    def of(cls, clock: SlaClock) -> Outcome:
        counted = counted_as(clock.status, clock.breached_at)
        return cls(
            ticket_id=clock.ticket_id,
            number=clock.number,
            metric=clock.metric,
            group_id=clock.group_id,
            counted=counted,
            at=clock.met_at or clock.breached_at,
            rule=clock.rule,
            target_s=clock.target_s,
            calendar=clock.calendar,
            elapsed_s=clock.elapsed_s,
            breached_at=clock.breached_at,
        )

    @property
    def day(self) -> str:
        return self.at.astimezone(UTC).date().isoformat() if self.at else ""

    def counts_since(self, since: datetime) -> bool:
        return self.counted is not None and self.at is not None and self.at >= since


class Tally:
    """Met and breached clocks per (day, metric, group) since ``since``, as the report has
    them: what-if's worker processes each keep one and send it back, not every clock."""

    def __init__(self, since: datetime) -> None:
        self.since = since
        self.met: Counter[tuple[str, str, str]] = Counter()
        self.breached: Counter[tuple[str, str, str]] = Counter()

    def add(self, outcome: Outcome) -> None:
        if outcome.counts_since(self.since):
            key = (outcome.day, outcome.metric, outcome.group_id)
            (self.met if outcome.counted == "met" else self.breached)[key] += 1

    def merge(self, other: Tally) -> None:
        self.met.update(other.met)
        self.breached.update(other.breached)

    def compliance(self) -> list[Compliance]:
        met, breached = self.met, self.breached
        return [
            Compliance(metric, group, day, met[key], breached[key])
            for key in sorted({*met, *breached})
            for day, metric, group in [key]
        ]


Key = tuple[str, str]
"""A clock: (ticket id, metric)."""


@dataclass
class Verdict:
    """What replaying some tickets under the proposal shows: how many clocks they would have,
    the proposed tally, and the clocks that would count differently from how they count now
    (with their proposed outcome; None: the proposal keeps no such clock)."""

    clocks: int
    tally: Tally
    changed: list[tuple[Key, Outcome | None]]


def judge(proposed: Iterable[Outcome], actual: dict[Key, Counted], since: datetime) -> Verdict:
    """Compare the proposed outcomes of some tickets with how their clocks count now
    (``actual``: the clocks that count since ``since``, and how)."""
    tally = Tally(since)
    changed: list[tuple[Key, Outcome | None]] = []
    clocks = 0
    actual = dict(actual)
    for outcome in proposed:
        clocks += 1
        tally.add(outcome)
        key = (outcome.ticket_id, outcome.metric)
        if actual.pop(key, None) != counted_since(outcome, since):
            changed.append((key, outcome))
    changed += [(key, None) for key in actual]
    return Verdict(clocks, tally, changed)


@dataclass(frozen=True)
class Side:
    """One row of the comparison: the actual figures and the proposed ones."""

    day: str
    metric: str
    group_id: str
    actual: Compliance | None
    proposed: Compliance | None


@dataclass(frozen=True)
class Change:
    """A clock whose outcome the proposal would change."""

    number: str
    metric: str
    group_id: str
    actual: str
    proposed: str
    why: str


@dataclass
class WhatIf:
    since: datetime
    until: datetime
    proposed_version: str
    tickets: int = 0
    clocks: int = 0
    seconds: float = 0.0
    comparison: list[Side] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


def compare(actual: list[Compliance], proposed: Tally) -> list[Side]:
    """Side by side per (day, metric, group)."""
    rows: dict[tuple[str, str, str], list[Compliance | None]] = {}
    for index, figures in enumerate((actual, proposed.compliance())):
        for c in figures:
            rows.setdefault((c.day, c.metric, c.group_id), [None, None])[index] = c
    return [Side(*key, *pair) for key, pair in sorted(rows.items())]


def change(before: Outcome | None, after: Outcome | None, since: datetime) -> Change:
    """One clock that counts differently, and why."""
    some = after or before
    assert some is not None
    return Change(
        number=some.number,
        metric=some.metric,
        group_id=some.group_id,
        actual=counted_since(before, since) or "-",
        proposed=counted_since(after, since) or "-",
        why=explain(before, after),
    )


def stored_count(
    status: str, met_at: datetime | None, breached_at: datetime | None, since: datetime
) -> Counted | None:
    """How a clock counts since ``since`` from the projection's columns, as :class:`Outcome`
    counts (breached, even if met late; else met; on its fulfilment, else its breach)."""
    at = met_at or breached_at
    return counted_as(status, breached_at) if at is not None and at >= since else None


def counted_as(status: str, breached_at: datetime | None) -> Counted | None:
    """Breached, even if met late; else met; else it does not count (yet)."""
    if breached_at is not None:
        return "breached"
    return "met" if status == "met" else None


def counted_since(outcome: Outcome | None, since: datetime) -> Counted | None:
    """How a clock counts in a window from ``since`` (None: not, or not yet)."""
    return outcome.counted if outcome is not None and outcome.counts_since(since) else None


def explain(before: Outcome | None, after: Outcome | None) -> str:
    """Why a clock counts differently: its terms then and now, and what happened to it."""
    if after is None or after.counted is None:
        if after is None:
            return "no target rule of the proposal matches this ticket"
        return f"under the proposal it has not counted yet ({_terms(after)})"
    if before is None:
        return f"the proposal starts a clock the actual policy did not ({_terms(after)})"
    change = f"{_terms(before)} -> {_terms(after)}"
    if after.counted == "breached":
        when = (
            after.breached_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
            if after.breached_at
            else "?"
        )
        took = "still not met" if before.counted is None else f"took {_span(before.elapsed_s)}"
        return f"{took}; {change}: breached at {when} UTC"
    return f"met after {_span(after.elapsed_s)} of business time; {change}"


def _terms(outcome: Outcome) -> str:
    rule = f"rule {outcome.rule}, " if outcome.rule else ""
    return f"{rule}target {_span(outcome.target_s)} on {outcome.calendar}"


def _span(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 120:
        return f"{minutes:g}m" if minutes == int(minutes) else f"{minutes:.1f}m"
    return f"{minutes / 60:.1f}h"

"""What-if figures: compliance per metric, group and day under the proposed policy beside the
actual one, and the clocks whose outcome would change, with why. Pure.

A clock counts the way ``desk sla report`` counts it (:mod:`services.sla.report`): met when met
before its deadline, breached when it breached (even if fulfilled late), on the UTC day of its
fulfilment, else of its breach; clocks with neither do not count yet.
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
        counted: Counted | None = None
        if clock.breached_at is not None:
            counted = "breached"
        elif clock.status == "met":
            counted = "met"
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

    @classmethod
    def counting(
        cls,
        *,
        ticket_id: str,
        number: str,
        metric: str,
        group_id: str,
        status: str,
        met_at: datetime | None,
        breached_at: datetime | None,
        elapsed_s: float,
    ) -> Outcome:
        """How a clock counts, from the projection's columns (its terms unknown)."""
        counted: Counted | None = None
        if breached_at is not None:
            counted = "breached"
        elif status == "met":
            counted = "met"
        at = met_at or breached_at
        return cls(
            ticket_id, number, metric, group_id, counted, at, "", 0.0, "", elapsed_s, breached_at
        )

    @property
    def day(self) -> str:
        return self.at.astimezone(UTC).date().isoformat() if self.at else ""

    def counts_since(self, since: datetime) -> bool:
        return self.counted is not None and self.at is not None and self.at >= since


def tally(outcomes: Iterable[Outcome], since: datetime) -> list[Compliance]:
    """Met and breached clocks per metric, group and day since ``since``, as the report has it."""
    met: Counter[tuple[str, str, str]] = Counter()
    breached: Counter[tuple[str, str, str]] = Counter()
    for outcome in outcomes:
        if not outcome.counts_since(since):
            continue
        key = (outcome.day, outcome.metric, outcome.group_id)
        (met if outcome.counted == "met" else breached)[key] += 1
    keys = sorted({*met, *breached})
    return [
        Compliance(metric, group, day, met[k], breached[k])
        for k in keys
        for day, metric, group in [k]
    ]


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


def compare(
    actual: list[Compliance],
    actual_clocks: dict[tuple[str, str], Outcome],
    proposed_clocks: dict[tuple[str, str], Outcome],
    since: datetime,
) -> tuple[list[Side], list[tuple[str, str]]]:
    """Side by side per (day, metric, group), and the clocks (ticket, metric) that count
    differently, in ticket order."""
    proposed = tally(proposed_clocks.values(), since)
    rows: dict[tuple[str, str, str], list[Compliance | None]] = {}
    for index, figures in enumerate((actual, proposed)):
        for c in figures:
            rows.setdefault((c.day, c.metric, c.group_id), [None, None])[index] = c
    sides = [Side(*key, *pair) for key, pair in sorted(rows.items())]
    changed = []
    for key in {*actual_clocks, *proposed_clocks}:
        before, after = actual_clocks.get(key), proposed_clocks.get(key)
        if _counted(before, since) != _counted(after, since):
            changed.append(key)
    changed.sort(key=lambda key: ((actual_clocks.get(key) or proposed_clocks[key]).number, key[1]))
    return sides, changed


def change(before: Outcome | None, after: Outcome | None, since: datetime) -> Change:
    """One clock that counts differently, and why."""
    some = after or before
    assert some is not None
    return Change(
        number=some.number,
        metric=some.metric,
        group_id=some.group_id,
        actual=_counted(before, since) or "-",
        proposed=_counted(after, since) or "-",
        why=explain(before, after),
    )


def _counted(outcome: Outcome | None, since: datetime) -> Counted | None:
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

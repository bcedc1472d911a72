"""What a policy change does, before it is made: ``desk policy diff`` and ``desk policy apply``.

Pure: two policy documents (the one in force, the proposed one) in, the differences an operator
must see out — targets, calendars, routing, groups and agents — and the refusals: a version
that removes a group still holding open or queued tickets, or named by the escalation ladder
in force, must map it elsewhere (``directory.retired_groups[].moved_to``), so nothing is
stranded and no escalation names a group that is gone; and a version that is not signed off by
a head of the directory in force, or not dated, or dated in the past (sop.md: a process change
takes effect on an explicit date, signed off by the responsible head).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.policy import Policy
from services.policy.sla import CalendarPolicy, TargetRule
from shared.durations import format_duration


@dataclass
class Section:
    """Changes of one concern, one line each."""

    title: str
    lines: list[str] = field(default_factory=list)


@dataclass
class Removal:
    """A group the proposal removes, where its tickets go, and what still names it."""

    group_id: str
    moved_to: str | None
    tickets: Counter[str]
    """Open tickets by status (``queued``, ``assigned``, ...); empty when not known."""
    on_ladder: list[int]
    """Escalation levels of the version in force that take tickets to it."""

    @property
    def refused(self) -> str | None:
        if self.moved_to is not None:
            return None
        why = []
        if sum(self.tickets.values()):
            held = ", ".join(f"{n} {status}" for status, n in sorted(self.tickets.items()))
            why.append(f"it holds open tickets ({held})")
        if self.on_ladder:
            why.append(f"escalation level {', '.join(map(str, self.on_ladder))} names it")
        if not why:
            return None
        return (
            f"group {self.group_id} is removed but {' and '.join(why)}: map it with "
            f"directory.retired_groups: [{{id: {self.group_id}, moved_to: <group>}}]"
        )


def sections(current: Policy, proposed: Policy) -> list[Section]:
    """Every difference that matters to operators, by concern (empty ones left out)."""
    found = [
        Section("version", _version(current, proposed)),
        Section("sla targets", _targets(current, proposed)),
        Section("calendars", _calendars(current, proposed)),
        Section("routing", _routing(current, proposed)),
        Section("groups and agents", _directory(current, proposed)),
        Section("triage rules", _named(current.triage.rules, proposed.triage.rules)),
        Section("everything else", _others(current, proposed)),
    ]
    return [s for s in found if s.lines]


def removals(
    current: Policy, proposed: Policy, tickets: Mapping[str, Counter[str]]
) -> list[Removal]:
    """Groups in force that the proposal drops or retires; ``tickets``: open ones per group."""
    kept = set(proposed.directory.group)
    ladder = current.routing.escalation
    return [
        Removal(
            group_id=g,
            moved_to=proposed.directory.moved.get(g),
            tickets=tickets.get(g, Counter()),
            on_ladder=[step.level for step in ladder if step.group == g],
        )
        for g in current.directory.group
        if g not in kept
    ]


APPROVERS = frozenset({"supervisor", "director"})
"""Roles whose sign-off a version takes: the heads of the directory in force."""

BACKDATING = timedelta(minutes=5)
"""How far before now a version's ``effective_from`` may lie (the time to type the command)."""


def sign_off_refusals(current: Policy, proposed: Policy, now: datetime) -> list[str]:
    """Why ``proposed`` may not be applied at ``now`` as it stands: unsigned (or signed by
    someone who is no head of the directory in force, by id or name), undated, or backdated —
    a past date would take effect at once while the history claims it began earlier."""
    refusals = []
    approver = proposed.approved_by
    heads = {
        key
        for agent in current.directory.agents
        if agent.role in APPROVERS
        for key in (agent.id, agent.name)
    }
    if approver is None:
        refusals.append(
            "approved_by is missing: a version is signed off by a supervisor or director"
        )
    elif approver not in heads:
        refusals.append(
            f"approved_by {approver!r} is no supervisor or director of the directory in force"
        )
    when = proposed.effective_from
    if when is None:
        refusals.append("effective_from is missing: a version takes effect on an explicit date")
    elif when < now - BACKDATING:
        refusals.append(
            f"effective_from {when.isoformat()} is in the past (now {now.isoformat()}): "
            "date it from now on"
        )
    return refusals


def _version(current: Policy, proposed: Policy) -> list[str]:
    lines = []
    when = proposed.effective_from
    lines.append(
        f"takes effect {when.isoformat() if when else 'as soon as services read it'}; "
        f"approved by {proposed.approved_by or 'nobody (approved_by is missing)'}"
    )
    if current.approved_by or current.effective_from:
        since = current.effective_from.isoformat() if current.effective_from else "the start"
        lines.append(f"replaces the version approved by {current.approved_by or '-'}, in force "
                     f"since {since}")  # fmt: skip
    return lines


def _targets(current: Policy, proposed: Policy) -> list[str]:
    before = {_name(i, r): r for i, r in enumerate(current.sla.targets if current.sla else [])}
    after = {_name(i, r): r for i, r in enumerate(proposed.sla.targets if proposed.sla else [])}
    lines = [f"target {n} removed ({_target(before[n])})" for n in before if n not in after]
    lines += [f"target {n} added ({_target(after[n])})" for n in after if n not in before]
    lines += [
        f"target {n}: {_target(before[n])} -> {_target(after[n])}"
        for n in before
        if n in after and before[n] != after[n]
    ]
    old, new = current.sla, proposed.sla
    if old and new and old.warnings != new.warnings:
        lines.append(f"warnings at {old.warnings} -> {new.warnings}")
    if old and new and old.escalation != new.escalation:
        lines.append(f"escalation ladder {_ladder(old.escalation)} -> {_ladder(new.escalation)}")
    if lines:
        lines.append("running clocks keep the terms they started with; new clocks get these")
    return lines


def _calendars(current: Policy, proposed: Policy) -> list[str]:
    before = current.sla.calendars if current.sla else {}
    after = proposed.sla.calendars if proposed.sla else {}
    lines = [f"calendar {n} removed" for n in before if n not in after]
    lines += [f"calendar {n} added" for n in after if n not in before]
    for name in before.keys() & after.keys():
        if before[name].version != after[name].version:
            lines += [
                f"calendar {name}: {change}" for change in _calendar(before[name], after[name])
            ]
    return sorted(lines)


def _calendar(before: CalendarPolicy, after: CalendarPolicy) -> list[str]:
    lines = []
    for name in ("holidays", "make_up_days"):
        old, new = set(getattr(before, name)), set(getattr(after, name))
        lines += [f"{name} + {d}" for d in sorted(new - old)]
        lines += [f"{name} - {d}" for d in sorted(old - new)]
    lines += _intervals("hours", dict(before.hours), dict(after.hours))
    lines += _intervals("half day", dict(before.half_days), dict(after.half_days))
    if (before.time_zone, before.always) != (after.time_zone, after.always):
        lines.append(f"{before.time_zone}/always={before.always} -> "
                     f"{after.time_zone}/always={after.always}")  # fmt: skip
    return lines


def _intervals(
    label: str, before: Mapping[Any, list[str]], after: Mapping[Any, list[str]]
) -> list[str]:
    return [
        f"{label} {key}: {before.get(key) or '-'} -> {after.get(key) or '-'}"
        for key in sorted({*before, *after}, key=str)
        if before.get(key) != after.get(key)
    ]


def _routing(current: Policy, proposed: Policy) -> list[str]:
    old, new = current.routing, proposed.routing
    lines = []
    for complexity in sorted({*old.by_complexity, *new.by_complexity}):
        a, b = old.by_complexity.get(complexity), new.by_complexity.get(complexity)
        if a != b:
            lines.append(f"{complexity} requests: {a} -> {b}")
    rows_before = {(r.product_line, r.problem_type): r.group for r in old.matrix}
    rows_after = {(r.product_line, r.problem_type): r.group for r in new.matrix}
    for cell in sorted({*rows_before, *rows_after}):
        a, b = rows_before.get(cell), rows_after.get(cell)
        if a != b:
            lines.append(f"matrix {cell[0]}/{cell[1]}: {a or '-'} -> {b or '-'}")
    pairs: list[tuple[str, Any, Any]] = [
        ("default group", old.default_group, new.default_group),
        ("ordinary complaints", old.complaints.ordinary, new.complaints.ordinary),
        ("major complaints", old.complaints.major, new.complaints.major),
        ("escalation", _ladder(old.escalation), _ladder(new.escalation)),
    ]
    lines += [f"{label}: {a} -> {b}" for label, a, b in pairs if a != b]
    return lines


def _directory(current: Policy, proposed: Policy) -> list[str]:
    old, new = current.directory, proposed.directory
    lines = [f"group {g} added" for g in new.group if g not in old.group]
    for g in old.group:
        if g in new.group:
            continue
        moved = new.moved.get(g)
        lines.append(f"group {g} removed" + (f", its tickets move to {moved}" if moved else ""))
    lines += [f"agent {a} added" for a in new.agent if a not in old.agent]
    lines += [f"agent {a} removed" for a in old.agent if a not in new.agent]
    lines += [
        f"agent {a}: groups {old.agent[a].groups} -> {new.agent[a].groups}"
        for a in old.agent.keys() & new.agent.keys()
        if old.agent[a].groups != new.agent[a].groups
    ]
    return sorted(lines)


def _named(before: list[Any], after: list[Any]) -> list[str]:
    old = {r.name: r for r in before}
    new = {r.name: r for r in after}
    lines = [f"{n} removed" for n in old if n not in new]
    lines += [f"{n} added" for n in new if n not in old]
    lines += [f"{n} changed" for n in old if n in new and old[n] != new[n]]
    if [r.name for r in before if r.name in new] != [r.name for r in after if r.name in old]:
        lines.append("the order of the rules changed")
    return lines


def _name(index: int, rule: TargetRule) -> str:
    return rule.name or f"{rule.metric}#{index}"


def _target(rule: TargetRule) -> str:
    minutes = rule.target.total_seconds() / 60
    span = f"{minutes:g}m" if minutes < 120 else f"{minutes / 60:g}h"
    when = {k: v for k, v in rule.when.model_dump().items() if v is not None}
    return f"{rule.metric} {span} on {rule.calendar}" + (f" when {when}" if when else "")


def _ladder(steps: list[Any]) -> str:
    return ", ".join(
        f"{s.level}:{getattr(s, 'group', None) or getattr(s, 'after', '')}" for s in steps
    )


SHOWN: frozenset[tuple[str, ...]] = frozenset(
    {
        ("approved_by",),
        ("effective_from",),
        ("sla", "targets"),
        ("sla", "calendars"),
        ("routing", "by_complexity"),
        ("routing", "matrix"),
        ("routing", "default_group"),
        ("routing", "complaints"),
        ("routing", "escalation"),
        ("triage", "rules"),
    }
)
"""What the sections above show in their own words; every other field is compared here (the
directory too: the groups section names groups and members, not roles or addresses)."""

_ABSENT = object()
_SHORT = 160
_ENTRY = 600
"""A list entry added or removed (a notification rule) is shown this far: its fields are it."""


def _others(current: Policy, proposed: Policy) -> list[str]:
    """Every other field that differs, by its path: an approver signs off what changes, so
    nothing may change unseen (a quiet period, a metric's terms, a notice's wording)."""
    lines: list[str] = []
    _compare((), current.model_dump(), proposed.model_dump(), lines)
    return lines


def _compare(path: tuple[str, ...], before: Any, after: Any, lines: list[str]) -> None:
    if path in SHOWN or before == after:
        return
    where = ".".join(path)
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted({*before, *after}, key=str):
            _compare((*path, str(key)), before.get(key, _ABSENT), after.get(key, _ABSENT), lines)
    elif isinstance(before, list) and isinstance(after, list):
        removed = [item for item in before if item not in after]
        added = [item for item in after if item not in before]
        if sorted(map(repr, before)) == sorted(map(repr, after)):
            lines.append(f"{where}: the same entries in another order")
        elif all(not isinstance(item, dict | list) for item in (*before, *after)):
            lines.append(f"{where}: {_shown(before)} -> {_shown(after)}")
        elif len(before) == len(after) and len(removed) == 1:  # one entry changed: which field
            for index, (a, b) in enumerate(zip(before, after, strict=True)):
                _compare((*path, str(index)), a, b, lines)
        else:
            lines += [f"{where} - {_shown(item, _ENTRY)}" for item in removed]
            lines += [f"{where} + {_shown(item, _ENTRY)}" for item in added]
            if not removed and not added:  # only how often an entry occurs changed
                lines.append(f"{where}: {len(before)} -> {len(after)} entries")
    elif isinstance(before, str) and isinstance(after, str):
        lines.append(f"{where}: {_around_change(before, after)}")
    else:
        lines.append(f"{where}: {_shown(before)} -> {_shown(after)}")


def _shown(value: Any, most: int = _SHORT) -> str:
    if value is _ABSENT:
        return "(absent)"
    if isinstance(value, timedelta):
        return format_duration(value)
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= most else text[: most - 1] + "…"


def _around_change(before: str, after: str) -> str:
    """Two texts, each from a little before where they first differ: a template edited past
    its first line must not print as the same text twice."""
    if len(before) <= _SHORT and len(after) <= _SHORT:
        return f"{before} -> {after}"
    same = (i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b)
    at = next(same, min(len(before), len(after)))
    start = max(0, at - 40)
    lead = "…" if start else ""
    return f"{lead}{_shown(before[start:])} -> {lead}{_shown(after[start:])}"

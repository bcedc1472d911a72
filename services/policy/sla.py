"""Policy section of sla: business calendars, what each metric measures, targets, the ladder.

Targets are ordered rules, first match wins per metric; a metric no rule matches has no clock
for that ticket. Each rule names a calendar. A clock copies everything it needs from here when
it starts (:class:`ClockTerms`), so an edit of the policy never changes a running clock.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Annotated, Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from services.vocabulary import Channel, Complexity, Priority
from shared.durations import Duration

Metric = Literal[
    "first_response",
    "start_of_work",
    "resolution",
    "complaint_first_contact",
    "specialist_findings",
    "customer_update",
]
Start = Literal["received", "dispatched", "assigned", "specialist_requested"]
Fulfilment = Literal[
    "responded", "waiting_for_customer", "work_started", "resolved", "findings_provided"
]
Update = Literal["responded", "waiting_for_customer", "escalated", "reassigned"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_Day = TypeVar("_Day", Weekday, date)
_HOURS = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_known_zone)]
"""An IANA time zone name (``Asia/Shanghai``), refused when the policy loads if unknown."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalendarPolicy(_Section):
    """Working time: hours per weekday in a time zone, minus holidays, plus make-up working days
    (调休: a Saturday worked to bridge a holiday) and half days; or round the clock.

    A date's hours, most specific first: ``half_days`` (its own intervals), ``make_up_days``
    (the hours of the calendar's first working weekday), ``holidays`` (none), its weekday's.
    """

    time_zone: TimeZoneName = "UTC"
    always: bool = Field(default=False, description="24x7: every second counts.")
    hours: dict[Weekday, list[str]] = Field(
        default={}, description="Working intervals per weekday, e.g. mon: ['09:00-18:00']."
    )
    holidays: list[date] = []
    make_up_days: list[date] = Field(
        default=[],
        description="调休: dates (usually a weekend day) worked with the hours of the first "
        "working weekday.",
    )
    half_days: dict[date, list[str]] = Field(
        default={}, description="Dates with their own working intervals, e.g. a half day."
    )

    @field_validator("hours", "half_days")
    @classmethod
    def _intervals(cls, value: dict[_Day, list[str]]) -> dict[_Day, list[str]]:
        for day, intervals in value.items():
            previous_end = -1
            for interval in intervals:
                start, end = interval_minutes(interval)
                if start < previous_end:
                    raise ValueError(f"{day}: intervals overlap or are out of order")
                previous_end = end
        return value

    @model_validator(mode="after")
    def _some_time(self) -> CalendarPolicy:
        if not self.always and not any(self.hours.values()):
            raise ValueError("a calendar needs working hours, or always: true")
        special = [*self.make_up_days, *self.half_days]
        clash = sorted({d for d in special if d in self.holidays or special.count(d) > 1})
        if clash:
            raise ValueError(
                f"{', '.join(map(str, clash))}: a date is a holiday, a make-up day or a half day,"
                " not several"
            )
        return self

    @property
    def workday(self) -> list[str]:
        """The hours of a make-up day: those of the first weekday that has any."""
        return next((self.hours[d] for d in WEEKDAYS if self.hours.get(d)), [])

    @cached_property
    def definition(self) -> dict[str, object]:
        """The calendar as JSON data: what a clock copies into its start event."""
        found: dict[str, object] = self.model_dump(mode="json")
        return found

    @cached_property
    def version(self) -> str:
        """Content hash of the definition: clock events record which calendar counted.

        Make-up and half days are left out while empty, so a calendar defined before they
        existed keeps its version.
        """
        definition = self.model_dump(mode="json")
        for name in ("make_up_days", "half_days"):
            if not definition[name]:
                del definition[name]
        text = json.dumps(definition, sort_keys=True)
        return "cal:" + hashlib.sha256(text.encode()).hexdigest()[:12]


def interval_minutes(interval: str) -> tuple[int, int]:
    """'09:00-18:00' -> (540, 1080); the end may be 24:00."""
    found = _HOURS.match(interval)
    if not found:
        raise ValueError(f"{interval!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in found.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60 or end <= start:
        raise ValueError(f"{interval!r} is not a forward interval within one day")
    return start, end


class MetricPolicy(_Section):
    """What one metric measures: when its clock starts, what stops it, whether it pauses."""

    starts: Start = Field(
        description="received: when the customer's request arrived; dispatched: when it was "
        "classified and routed; assigned: its first assignment to an agent; "
        "specialist_requested: each request_specialist (the clock answers to the group asked)."
    )
    fulfilled_by: list[Fulfilment] = Field(
        min_length=1,
        description="Events that meet the clock: responded (an agent's reply), "
        "waiting_for_customer (an agent's question to the customer), work_started, resolved, "
        "findings_provided. A clock still open when its ticket is resolved stops there.",
    )
    pauses_when_waiting: bool = Field(
        default=False, description="Waiting for the customer stops the clock until they reply."
    )
    restarts_on_reopen: bool = Field(
        default=False, description="A reopened ticket starts this clock again from zero."
    )
    restarts_on: list[Update] = Field(
        default=[],
        description="Events that start a running clock again from zero: for a clock that "
        "measures the quiet since the customer last heard from the desk (customer_update).",
    )
    warns: bool = Field(default=True, description="Fires the policy's warnings.")
    escalates: bool = Field(
        default=True, description="Climbs the escalation ladder after its breach."
    )
    repeats: bool = Field(
        default=False,
        description="Starts again at its breach: a clock of the quiet since the customer last "
        "heard from the desk (customer_update) breaches again after each further target of "
        "quiet, so its progress notice goes out each time, not once. Such a clock has no "
        "ladder to climb (escalates: false).",
    )
    labels: dict[str, str] = Field(
        default={},
        description="language -> what people read for this metric in notices "
        "({{ metric_name }}: '首次响应', 'first response'); none: its id.",
    )

    @model_validator(mode="after")
    def _repeats_without_ladder(self) -> MetricPolicy:
        if self.repeats and self.escalates:
            raise ValueError("a metric that repeats starts again at its breach: escalates: false")
        return self


class Conditions(_Section):
    """All given conditions must hold (lists: any of)."""

    complexity: list[Complexity] | None = None
    priority: list[Priority] | None = None
    channel: list[Channel] | None = None
    complaint: bool | None = None
    major_complaint: bool | None = None


class TargetRule(_Section):
    metric: Metric
    when: Conditions = Conditions()
    target: Duration
    calendar: str
    name: str | None = Field(default=None, description="Shown as the rule that chose it.")

    @field_validator("target")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("a target must be longer than zero")
        return value


class LadderStep(_Section):
    level: int = Field(ge=1, le=9)
    after: Duration = Field(
        ge=timedelta(0), description="Business time after the breach at which it fires."
    )


class SatisfactionPolicy(_Section):
    """The customers' verdict (the survey of a resolution notice): CSAT is the share of scores
    at ``satisfied_from`` or above, held against ``target``."""

    target: float = Field(
        default=0.9, gt=0, le=1, description="CSAT the desk aims at (sop.md: at least 90 %)."
    )
    satisfied_from: int = Field(
        default=4, ge=1, le=5, description="Lowest score (1-5) that counts as satisfied."
    )

    def satisfied(self, score: int) -> bool:
        return score >= self.satisfied_from


DEFAULT_SATISFACTION = SatisfactionPolicy()
DEFAULT_REVIEW_PERIOD = timedelta(days=30)
DEFAULT_REVIEW_TARGET = 0.95


class SlaPolicy(_Section):
    calendars: dict[str, CalendarPolicy]
    metrics: dict[Metric, MetricPolicy]
    targets: list[TargetRule]
    warnings: list[float] = Field(
        default=[0.75, 0.9], description="Fractions of the target at which a warning fires."
    )
    escalation: list[LadderStep] = Field(
        default=[], description="Levels in order; level 1 usually fires at the breach (0m)."
    )
    satisfaction: SatisfactionPolicy = DEFAULT_SATISFACTION
    review_period: Duration = Field(
        default=DEFAULT_REVIEW_PERIOD,
        gt=timedelta(0),
        le=timedelta(days=3660),
        description="What the console's per-agent review covers, back from now (sop.md: "
        "per-role measures reviewed monthly).",
    )
    review_target: float = Field(
        default=DEFAULT_REVIEW_TARGET,
        ge=0,
        le=1,
        description="The share of the SLA clocks an agent answered for that the review expects "
        "met in time (sop.md: at least 95 % of steps done correctly); below it, the agent's "
        "figure is marked.",
    )

    @field_validator("warnings")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in value) or sorted(set(value)) != value:
            raise ValueError("warnings are increasing fractions between 0 and 1")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SlaPolicy:
        problems = [
            f"targets[{i}] names unknown calendar {rule.calendar!r}"
            for i, rule in enumerate(self.targets)
            if rule.calendar not in self.calendars
        ]
        problems += [
            f"targets[{i}] measures {rule.metric!r}, which metrics does not define"
            for i, rule in enumerate(self.targets)
            if rule.metric not in self.metrics
        ]
        levels = [step.level for step in self.escalation]
        if levels != list(range(1, len(levels) + 1)):
            problems.append("escalation levels must be 1, 2, 3, ... in order")
        afters = [step.after for step in self.escalation]
        if afters != sorted(afters):
            problems.append("escalation levels must fire in order (after grows)")
        if not problems:
            problems = self._unreachable(max(afters, default=timedelta(0)))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _unreachable(self, last_step: timedelta) -> list[str]:
        """Targets whose last mark (the breach and the ladder's last step) no clock could reach
        within its calendar's search: computing its timer would raise, and the timer worker,
        which computes every due clock's in one round, would fail for every ticket."""
        from services.policy.calendar import BusinessCalendar  # it imports this module

        problems = []
        start = datetime.now(UTC)
        calendars = {name: BusinessCalendar(c) for name, c in self.calendars.items()}
        for i, rule in enumerate(self.targets):
            try:
                calendars[rule.calendar].add(start, (rule.target + last_step).total_seconds())
            except ValueError:
                problems.append(
                    f"targets[{i}] ({rule.target} and the last escalation step "
                    f"{last_step}) is not reached within three years of {rule.calendar!r}"
                )
        return problems


class TicketTerms(Protocol):
    """What target rules look at."""

    complexity: str
    priority: str
    channel: str
    complaint: bool
    major_complaint: bool


def choose(policy: SlaPolicy, metric: Metric, facts: TicketTerms) -> tuple[int, TargetRule] | None:
    """The first target rule of ``metric`` whose conditions the ticket meets."""
    for index, rule in enumerate(policy.targets):
        when = rule.when
        if rule.metric != metric:
            continue
        if when.complexity is not None and facts.complexity not in when.complexity:
            continue
        if when.priority is not None and facts.priority not in when.priority:
            continue
        if when.channel is not None and facts.channel not in when.channel:
            continue
        if when.complaint is not None and facts.complaint != when.complaint:
            continue
        if when.major_complaint is not None and facts.major_complaint != when.major_complaint:
            continue
        return index, rule
    return None

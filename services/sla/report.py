"""SLA reports from the clocks projection: compliance, mean times, tickets at risk, CSAT.

``desk sla report`` prints them; the sla service exports the last day's figures as Prometheus
gauges (refreshed every ``sla_report_interval``). Compliance counts a clock's run as met only when
it was met before its deadline; a breach counts even if the metric was fulfilled late; every run
counts, the ones a later run replaced too (``clock_runs``). CSAT is the
share of survey scores the policy counts as satisfied (4 and 5 by default), per day and group
and for the whole desk (group ``all``), against the policy's target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client import Gauge

from services.policy.sla import DEFAULT_SATISFACTION, SatisfactionPolicy
from shared.database import Connection

if TYPE_CHECKING:
    from shared.service import Service, Worker

EVERY_GROUP = "all"
"""The group label of the whole desk's CSAT."""

COMPLIANCE = Gauge(
    "desk_sla_compliance_ratio",
    "Share of clock runs met in time over the last day, per metric and group.",
    ["metric", "group"],
)
MEAN_FIRST_RESPONSE = Gauge(
    "desk_sla_mean_first_response_seconds", "Mean wall time to first response, last day."
)
MEAN_HANDLING = Gauge(
    "desk_sla_mean_handling_seconds", "Mean wall time from receipt to resolution, last day."
)
AT_RISK = Gauge("desk_sla_tickets_at_risk", "Open tickets with a warned, unbreached clock.")
BREACHED_OPEN = Gauge("desk_sla_tickets_breached_open", "Open tickets with a breached clock.")
CSAT = Gauge(
    "desk_sla_csat_ratio",
    "Share of survey scores counted as satisfied over the last day, per group ('all': the desk).",
    ["group"],
)
CSAT_TARGET = Gauge("desk_sla_csat_target_ratio", "The policy's CSAT target.")


@dataclass(frozen=True)
class Compliance:
    metric: str
    group_id: str
    day: str
    met: int
    breached: int

    @property
    def ratio(self) -> float | None:
        total = self.met + self.breached
        return self.met / total if total else None


@dataclass(frozen=True)
class Csat:
    day: str
    group_id: str
    satisfied: int
    rated: int

    @property
    def ratio(self) -> float | None:
        return self.satisfied / self.rated if self.rated else None


@dataclass(frozen=True)
class AtRisk:
    number: str
    metric: str
    group_id: str
    status: str
    warned: float
    deadline: datetime | None


@dataclass
class SlaReport:
    since: datetime
    compliance: list[Compliance] = field(default_factory=list)
    mean_first_response_s: float | None = None
    mean_handling_s: float | None = None
    at_risk: list[AtRisk] = field(default_factory=list)
    tickets_at_risk: int = 0
    tickets_breached_open: int = 0
    csat: list[Csat] = field(default_factory=list)
    csat_target: float = DEFAULT_SATISFACTION.target

    def below_target(self) -> list[Csat]:
        """The days and groups whose CSAT is under the target."""
        return [c for c in self.csat if c.ratio is not None and c.ratio < self.csat_target]


EVERY_RUN = (
    "(SELECT metric, group_id, status, met_at, breached_at, wall_s FROM clocks "
    "UNION ALL SELECT metric, group_id, status, met_at, breached_at, wall_s FROM clock_runs)"
)
"""Every run of every clock: the current ones and those a later run replaced."""


async def build_report(
    conn: Connection,
    since: datetime,
    *,
    by_day: bool = True,
    satisfaction: SatisfactionPolicy = DEFAULT_SATISFACTION,
    every_run: bool = True,
) -> SlaReport:
    """The figures since ``since``. Compliance counts every run of a clock — each quiet period
    of a repeating metric, a run an update or a reopen restarted — unless ``every_run`` is
    False: each clock's current run only, as what-if replays them. The mean times are the
    current runs' (as before ``clock_runs``)."""
    day = (
        "to_char(coalesce(met_at, breached_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        if by_day
        else "''"
    )
    runs = EVERY_RUN if every_run else "clocks"
    rows = await conn.fetch(
        f"SELECT metric, group_id, {day} AS day, "
        "count(*) FILTER (WHERE status = 'met'), count(*) FILTER (WHERE breached_at IS NOT NULL) "
        f"FROM {runs} c WHERE coalesce(met_at, breached_at) >= $1 "
        "GROUP BY 1, 2, 3 ORDER BY 3, 1, 2",
        since,
    )
    report = SlaReport(since, [Compliance(*row) for row in rows])
    report.mean_first_response_s = await conn.fetchval(
        "SELECT avg(wall_s) FROM clocks WHERE metric IN ('first_response', "
        "'complaint_first_contact') AND met_at >= $1",
        since,
    )
    report.mean_handling_s = await conn.fetchval(
        "SELECT avg(wall_s) FROM clocks WHERE metric = 'resolution' AND met_at >= $1", since
    )
    risky = await conn.fetch(
        "SELECT number, metric, group_id, status, warned, deadline FROM clocks "
        "WHERE status IN ('running', 'paused', 'breached') AND (warned > 0 OR status = 'breached')"
        " ORDER BY deadline NULLS LAST LIMIT 50"
    )
    report.at_risk = [AtRisk(*row) for row in risky]
    counts = await conn.fetchrow(
        "SELECT count(DISTINCT ticket_id) FILTER (WHERE status IN ('running', 'paused') "
        "AND warned > 0), count(DISTINCT ticket_id) FILTER (WHERE status = 'breached') "
        "FROM clocks WHERE status IN ('running', 'paused', 'breached')"
    )
    assert counts is not None
    report.tickets_at_risk, report.tickets_breached_open = counts[0], counts[1]
    rated_day = "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')" if by_day else "''::text"
    scores = await conn.fetch(
        f"SELECT {rated_day} AS day, coalesce(group_id, $3), "
        "count(*) FILTER (WHERE score >= $2), count(*) FROM satisfaction "
        "WHERE recorded_at >= $1 GROUP BY GROUPING SETS ((1, group_id), (1)) "
        "ORDER BY 1, group_id NULLS FIRST",
        since,
        satisfaction.satisfied_from,
        EVERY_GROUP,
    )
    report.csat = [Csat(*row) for row in scores]
    report.csat_target = satisfaction.target
    return report


def export(report: SlaReport) -> None:
    """Set the gauges from a report (the last day's, without the per-day split)."""
    COMPLIANCE.clear()
    for row in report.compliance:
        if row.ratio is not None:
            COMPLIANCE.labels(row.metric, row.group_id).set(row.ratio)
    MEAN_FIRST_RESPONSE.set(report.mean_first_response_s or 0.0)
    MEAN_HANDLING.set(report.mean_handling_s or 0.0)
    AT_RISK.set(report.tickets_at_risk)
    BREACHED_OPEN.set(report.tickets_breached_open)
    CSAT.clear()
    for score in report.csat:
        if score.ratio is not None:
            CSAT.labels(score.group_id).set(score.ratio)
    CSAT_TARGET.set(report.csat_target)


def report_gauges(satisfaction: Callable[[datetime], SatisfactionPolicy]) -> Worker:
    """The worker step recomputing the gauges from the projection (every
    ``sla_report_interval``, see app), with the CSAT terms of the policy in force now."""

    async def refresh_gauges(service: Service) -> None:
        now = await service.clock.now()
        async with service.pool.acquire() as conn:
            report = await build_report(
                conn, now - timedelta(days=1), by_day=False, satisfaction=satisfaction(now)
            )
        export(report)

    return refresh_gauges

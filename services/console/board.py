"""The dashboard's figures, for one viewer's part of the desk.

Open tickets by status and group, queues and their oldest waiting ticket, agents' load against
capacity, SLA at risk and breached now and compliance today, requests per minute and rejections,
dead letters per service, CSAT today against the policy's target, and — for supervisors and
above — each agent's figures of the last 30 days (the monthly review: tickets handled, mean
first response, CSAT, reopen rate). "Today" starts at midnight in the desk's time zone (the
policy's ``numbering.time_zone``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from services.console.contract import (
    AgentFigure,
    AgentReview,
    Compliance,
    CsatFigure,
    CsatFigures,
    Dashboard,
    DeadLetterFigure,
    GroupLoad,
    MinuteFigure,
    QueueFigure,
    ReasonCount,
    SlaFigures,
    TrafficFigures,
)
from services.console.listing import Conditions, worked
from services.console.storage import LOADED
from services.console.visibility import Viewer
from services.policy import Policy
from services.policy.sla import (
    DEFAULT_REVIEW_PERIOD,
    DEFAULT_REVIEW_TARGET,
    DEFAULT_SATISFACTION,
)
from shared.database import Connection


def day_start(now: datetime, zone: str) -> datetime:
    local = now.astimezone(ZoneInfo(zone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


async def dashboard(conn: Connection, viewer: Viewer, policy: Policy, now: datetime) -> Dashboard:
    today = day_start(now, policy.numbering.time_zone)
    satisfaction = policy.sla.satisfaction if policy.sla else DEFAULT_SATISFACTION
    reviews_since = now - (policy.sla.review_period if policy.sla else DEFAULT_REVIEW_PERIOD)
    csat = await _csat(conn, viewer, today, satisfaction.satisfied_from)
    overall = next(c for c in csat if c.group_id == "all")
    return Dashboard(
        generated_at=now,
        day_started_at=today,
        open_tickets=await _open(conn, viewer),
        queues=await _queues(conn, viewer, now),
        agents=await _agents(conn, viewer),
        sla=await _sla(conn, viewer, today),
        traffic=await _traffic(conn, now),
        dead_letters=await _dead_letters(conn, now),
        csat=CsatFigures(
            target=satisfaction.target,
            today=overall,
            by_group=[c for c in csat if c.group_id != "all"],
            below_target=overall.ratio is not None and overall.ratio < satisfaction.target,
        ),
        reviews=await _reviews(conn, viewer, reviews_since, satisfaction.satisfied_from)
        if viewer.supervises
        else None,
        reviews_since=reviews_since if viewer.supervises else None,
        review_target=(policy.sla.review_target if policy.sla else DEFAULT_REVIEW_TARGET)
        if viewer.supervises
        else None,
    )


def _scope(viewer: Viewer, *clauses: str) -> Conditions:
    where = Conditions()
    for clause in clauses:
        where.add(clause)
    worked(where, viewer)
    return where


async def _open(conn: Connection, viewer: Viewer) -> list[GroupLoad]:
    where = _scope(viewer, "status <> 'closed'", "group_id IS NOT NULL")
    rows = await conn.fetch(
        f"SELECT group_id, status, count(*) FROM tickets WHERE {where.sql()} "
        "GROUP BY group_id, status ORDER BY group_id",
        *where.params,
    )
    groups: dict[str, dict[str, int]] = {}
    for group_id, status, count in rows:
        groups.setdefault(group_id, {})[status] = count
    return [GroupLoad(group_id=g, statuses=s, total=sum(s.values())) for g, s in groups.items()]


async def _queues(conn: Connection, viewer: Viewer, now: datetime) -> list[QueueFigure]:
    where = _scope(viewer, "status = 'queued'")
    rows = await conn.fetch(
        f"SELECT group_id, count(*), min(queued_at) FROM tickets WHERE {where.sql()} "
        "GROUP BY group_id ORDER BY count(*) DESC, group_id",
        *where.params,
    )
    return [
        QueueFigure(
            group_id=g,
            queued=n,
            oldest_waiting_s=max(0.0, (now - oldest).total_seconds()) if oldest else None,
        )
        for g, n, oldest in rows
    ]


async def _agents(conn: Connection, viewer: Viewer) -> list[AgentFigure]:
    where = Conditions()
    if viewer.groups is not None:
        where.add("a.groups && {}::text[]", sorted(viewer.groups))
    where.params.append(list(LOADED))
    rows = await conn.fetch(
        "SELECT a.agent_id, a.name, a.on_shift, a.capacity, (SELECT count(*) FROM tickets t "
        f"WHERE t.agent_id = a.agent_id AND t.status = ANY(${len(where.params)}::text[])) "
        f"FROM agents a WHERE {where.sql()} ORDER BY a.agent_id",
        *where.params,
    )
    return [
        AgentFigure(agent_id=a, name=n, on_shift=s, capacity=c, load=load)
        for a, n, s, c, load in rows
    ]


_EVERY_RUN = (
    "(SELECT metric, group_id, agent_id, status, late, met_at, breached_at FROM clocks "
    "UNION ALL SELECT metric, group_id, agent_id, status, late, met_at, breached_at "
    "FROM clock_runs)"
)
"""Every run of every clock: the current ones and those a later run replaced (a repeating
metric's quiet periods, a run an update or a reopen restarted): compliance counts them all."""


async def _sla(conn: Connection, viewer: Viewer, today: datetime) -> SlaFigures:
    where = _scope(viewer, "status <> 'closed'", "sla <> 'ok'")
    rows = await conn.fetch(
        f"SELECT sla, count(*) FROM tickets WHERE {where.sql()} GROUP BY sla", *where.params
    )
    counts: dict[str, int] = {r[0]: r[1] for r in rows}
    clocks = Conditions()
    clocks.add("coalesce(met_at, breached_at) >= {}", today)
    if viewer.groups is not None:
        clocks.add("group_id = ANY({}::text[])", sorted(viewer.groups))
    finished = await conn.fetch(
        "SELECT metric, count(*) FILTER (WHERE status = 'met' AND NOT late), "
        f"count(*) FILTER (WHERE breached_at IS NOT NULL) FROM {_EVERY_RUN} c "
        f"WHERE {clocks.sql()} GROUP BY metric ORDER BY metric",
        *clocks.params,
    )
    return SlaFigures(
        at_risk=counts.get("at_risk", 0),
        breached=counts.get("breached", 0),
        compliance=[
            Compliance(metric=m, met=met, breached=b, ratio=met / (met + b) if met + b else None)
            for m, met, b in finished
        ],
    )


async def _traffic(conn: Connection, now: datetime) -> TrafficFigures:
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=14)
    rows = await conn.fetch(
        "SELECT minute, sum(count) FILTER (WHERE kind = 'request'), "
        "sum(count) FILTER (WHERE kind = 'request_rejected'), "
        "sum(count) FILTER (WHERE kind = 'command_refused') "
        "FROM traffic WHERE minute >= $1 GROUP BY minute",
        start,
    )
    found = {m: (r or 0, j or 0, f or 0) for m, r, j, f in rows}
    minutes = [start + timedelta(minutes=n) for n in range(15)]
    figures = [
        MinuteFigure(
            minute=m,
            requests=found.get(m, (0, 0, 0))[0],
            rejected=found.get(m, (0, 0, 0))[1],
            refused=found.get(m, (0, 0, 0))[2],
        )
        for m in minutes
    ]
    last = figures[-2]  # the last whole minute
    reasons = await conn.fetch(
        "SELECT kind, reason, sum(count)::int FROM traffic WHERE minute >= $1 "
        "AND kind IN ('request_rejected', 'command_refused') GROUP BY kind, reason "
        "ORDER BY 3 DESC",
        now - timedelta(hours=1),
    )
    return TrafficFigures(
        minutes=figures,
        requests_per_minute=float(last.requests),
        rejections=[ReasonCount(kind=k, reason=r, count=c) for k, r, c in reasons],
    )


async def _dead_letters(conn: Connection, now: datetime) -> list[DeadLetterFigure]:
    rows = await conn.fetch(
        "SELECT service, count(*) FILTER (WHERE recorded_at >= $1), count(*) "
        "FROM dead_letters_seen GROUP BY service ORDER BY service",
        now - timedelta(days=1),
    )
    return [DeadLetterFigure(service=s, last_day=d, total=t) for s, d, t in rows]


async def _csat(
    conn: Connection, viewer: Viewer, today: datetime, satisfied_from: int
) -> list[CsatFigure]:
    where = _scope(viewer)
    where.add("satisfied_at >= {}", today)
    where.params.append(satisfied_from)
    rows = await conn.fetch(
        f"SELECT coalesce(group_id, 'all'), count(*) FILTER (WHERE satisfaction >= "
        f"${len(where.params)}), count(*) FROM tickets WHERE {where.sql()} "
        "GROUP BY GROUPING SETS ((group_id), ()) ORDER BY group_id NULLS FIRST",
        *where.params,
    )
    figures = [
        CsatFigure(group_id=g, satisfied=s, rated=n, ratio=s / n if n else None) for g, s, n in rows
    ]
    if not any(f.group_id == "all" for f in figures):
        figures.insert(0, CsatFigure(group_id="all", satisfied=0, rated=0, ratio=None))
    return figures


async def _reviews(
    conn: Connection, viewer: Viewer, since: datetime, satisfied_from: int
) -> list[AgentReview]:
    where = Conditions()
    if viewer.groups is not None:
        where.add("a.groups && {}::text[]", sorted(viewer.groups))
    where.params += [since, satisfied_from]
    start, satisfied = f"${len(where.params) - 1}", f"${len(where.params)}"
    rows = await conn.fetch(
        "SELECT a.agent_id, a.name, r.handled, r.reopened, r.rated, r.satisfied, "
        "(SELECT avg(extract(epoch FROM t.first_response_at - t.received_at)) FROM tickets t "
        f" WHERE t.first_responder = a.agent_id AND t.first_response_at >= {start}), "
        "c.counted, c.in_time "
        "FROM agents a LEFT JOIN LATERAL (SELECT count(*) AS counted, "
        "count(*) FILTER (WHERE status = 'met' AND NOT late AND breached_at IS NULL) AS in_time "
        f"FROM {_EVERY_RUN} k WHERE k.agent_id = a.agent_id "
        f"AND coalesce(k.met_at, k.breached_at) >= {start}) c ON true "
        "LEFT JOIN LATERAL (SELECT count(*) AS handled, "
        "count(*) FILTER (WHERE t.reopened > 0) AS reopened, "
        "count(t.satisfaction) AS rated, "
        f"count(*) FILTER (WHERE t.satisfaction >= {satisfied}) AS satisfied "
        f"FROM tickets t WHERE t.resolved_by = a.agent_id AND t.resolved_at >= {start}) r ON true "
        f"WHERE {where.sql()} ORDER BY r.handled DESC, a.agent_id",
        *where.params,
    )
    return [
        AgentReview(
            agent_id=agent,
            name=name,
            handled=handled,
            mean_first_response_s=float(first) if first is not None else None,
            csat=satisfied_n / rated if rated else None,
            reopen_rate=reopened / handled if handled else None,
            clocks=counted,
            in_time=in_time / counted if counted else None,
        )
        for agent, name, handled, reopened, rated, satisfied_n, first, counted, in_time in rows
    ]

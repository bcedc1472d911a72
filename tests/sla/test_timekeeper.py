"""Clocks driven by ticket events and by time, without infrastructure."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import yaml

from services.dispatch.events import (
    FindingsProvided,
    SpecialistRequested,
    TicketAssigned,
    TicketClosed,
    TicketEscalated,
    TicketReopened,
    TicketResolved,
    TicketResponded,
    TicketResumed,
    WaitingForCustomer,
    WorkStarted,
)
from services.policy import DEFAULT_POLICY
from services.sla.clocks import SlaClock, fold
from services.sla.events import (
    ClockBreached,
    ClockMet,
    ClockPaused,
    ClockStarted,
    ClockStopped,
    ClockWarned,
    EscalationRaised,
)
from services.sla.timekeeper import Timekeeper, clock_id
from shared.events import EventData
from tests.sla.support import SLA, T0, classified, sla_policy
from tests.support.recorded import Recorded

pytestmark = pytest.mark.unit


class World:
    """A timekeeper with its recorded events, and a timer that fires like the worker does."""

    def __init__(self, sla: dict[str, Any] | None = None) -> None:
        self.policy, self.version = sla_policy(sla)
        self.recorded = Recorded()
        self.keeper = Timekeeper(self.policy, self.version, {}, {})
        self.n = 0

    def on(self, event: EventData, at: datetime, version: int | None = None) -> None:
        self.n += 1
        self.keeper.on(event, at, f"event-{self.n}", self.recorded, version)

    def clock(self, ticket: int, metric: str) -> SlaClock:
        return self.keeper.clocks[clock_id(classified(ticket).ticket_id, metric)]

    def run_until(self, until: datetime) -> list[Any]:
        """Fire every timer due by ``until`` at its due time, as a perfect worker would."""
        fired: list[Any] = []
        while True:
            due = [(c.due_at, c) for c in self.keeper.clocks.values() if c.due_at is not None]
            due = [(d, c) for d, c in due if d <= until]
            if not due:
                return fired
            moment, clock = min(due, key=lambda pair: pair[0])
            events = clock.fire(moment)
            assert events, f"{clock.clock_id} due at {moment} fired nothing"
            self.recorded(clock.clock_id, events, expected_version=clock.version)
            for event in events:
                clock = clock.apply(event)
            self.keeper.clocks[clock.clock_id] = clock
            fired += events

    def events(self, kind: type[EventData], metric: str | None = None) -> list[Any]:
        return [e for e in self.recorded.events(kind) if metric is None or e.metric == metric]


def ids(n: int = 1) -> dict[str, str]:
    ticket = classified(n)
    return {"ticket_id": ticket.ticket_id, "number": ticket.number}


def assigned(n: int = 1, agent: str = "ann") -> TicketAssigned:
    return TicketAssigned(
        **ids(n),
        group_id="front-line",
        agent_id=agent,
        strategy="round_robin",
        reason="t",
        cause="classified",
        policy_version="v",
    )


def minutes(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def test_a_simple_request_without_response_warns_breaches_and_climbs_the_ladder() -> None:
    world = World()
    world.on(classified(1), T0)
    world.on(assigned(1), T0)
    started = world.events(ClockStarted)
    assert {s.metric for s in started} == {"first_response", "resolution", "start_of_work"}
    fired = [
        e for e in world.run_until(minutes(120)) if getattr(e, "metric", "") == "first_response"
    ]
    kinds = [(type(e).__name__, getattr(e, "fraction", getattr(e, "level", None))) for e in fired]
    assert kinds == [
        ("ClockWarned", 0.75),
        ("ClockWarned", 0.9),
        ("ClockBreached", None),
        ("EscalationRaised", 1),
        ("EscalationRaised", 2),
        ("EscalationRaised", 3),
    ]
    due = {(type(e).__name__, getattr(e, "level", 0)): e.due_at for e in fired}
    assert due[("ClockBreached", 0)] == minutes(30)
    assert due[("EscalationRaised", 2)] == minutes(60)
    assert due[("EscalationRaised", 3)] == minutes(90)
    assert world.clock(1, "first_response").due_at is None  # nothing left to fire
    later = world.run_until(minutes(5000))
    assert later and all(e.metric != "first_response" for e in later)


def test_a_worker_running_late_drops_the_warnings_its_breach_makes_stale() -> None:
    """sla stopped from minute 20 to 31: the breach and level 1 fire, the 75 % and 90 %
    warnings do not (the assignee would get them with the breach); a replay, which fires mark
    by mark, still warns."""
    world = World()
    world.on(classified(1), T0)
    clock = world.clock(1, "first_response")
    late = clock.fire(minutes(31))
    assert [(type(e).__name__, getattr(e, "level", None)) for e in late] == [
        ("ClockBreached", None),
        ("EscalationRaised", 1),
    ]
    on_time = clock.fire(minutes(28))
    assert [getattr(e, "fraction", None) for e in on_time] == [0.75, 0.9]
    world.keeper.fire_due(classified(1).ticket_id, minutes(31), world.recorded)
    replayed = [e for e in world.recorded.events(ClockWarned) if e.metric == "first_response"]
    assert [e.fraction for e in replayed] == [0.75, 0.9]


def test_a_response_at_29_minutes_meets_the_target() -> None:
    world = World()
    world.on(classified(1), T0)
    world.run_until(minutes(29))
    world.on(
        TicketResponded(**ids(), agent_id="ann", message="hi", first_response=True), minutes(29)
    )
    [met] = world.events(ClockMet, "first_response")
    assert (met.late, met.elapsed_s) == (False, 29 * 60)
    world.run_until(minutes(200))
    assert world.events(ClockBreached, "first_response") == []
    assert world.clock(1, "first_response").status == "met"


def test_a_response_after_the_breach_is_met_late_and_the_breach_stands() -> None:
    world = World()
    world.on(classified(1), T0)
    world.run_until(minutes(31))
    world.on(
        TicketResponded(**ids(), agent_id="ann", message="hi", first_response=True), minutes(40)
    )
    [met] = world.events(ClockMet, "first_response")
    assert met.late
    assert len(world.events(ClockBreached, "first_response")) == 1
    world.run_until(minutes(300))
    assert [e.level for e in world.events(EscalationRaised, "first_response")] == [1]
    assert world.clock(1, "first_response").status == "met_late"


def test_a_fulfilment_past_an_unrecorded_deadline_records_the_breach_first() -> None:
    world = World()
    world.on(classified(1), T0)  # sla was down: no timer ran
    world.on(
        TicketResponded(**ids(), agent_id="ann", message="hi", first_response=True), minutes(45)
    )
    kinds = [
        type(e).__name__
        for e in world.recorded.events()
        if getattr(e, "metric", "") == "first_response"
    ]
    assert kinds == ["ClockStarted", "ClockBreached", "ClockMet"]


def test_a_resolution_stops_every_clock_it_does_not_meet() -> None:
    """Resolved in five minutes without a separate reply, the ticket's first-response clock
    (met only by a reply under this policy) warned, breached and climbed the whole escalation
    ladder for a ticket nobody had left to answer."""
    world = World()
    world.on(classified(1), T0)
    world.on(assigned(1), T0)
    world.on(TicketResolved(**ids(), agent_id="ann", resolution="done"), minutes(5))
    [stopped] = world.events(ClockStopped, "first_response")
    assert (stopped.reason, stopped.at) == ("ticket_resolved", minutes(5))
    assert world.run_until(minutes(60 * 24)) == []
    assert world.events(ClockBreached) == world.events(EscalationRaised) == []
    world.on(TicketReopened(**ids(), actor="customer", reason="still broken"), minutes(60))
    assert world.clock(1, "first_response").status == "stopped"  # it does not restart on reopen
    assert world.clock(1, "resolution").status == "running"


@pytest.mark.parametrize(
    "answer",
    [
        WaitingForCustomer(**ids(), agent_id="ann", question="Which model is it?"),
        TicketResolved(**ids(), agent_id="ann", resolution="done"),
        TicketResponded(**ids(), agent_id="ann", message="On it.", first_response=True),
    ],
    ids=["question", "resolution", "reply"],
)
def test_with_the_shipped_policy_a_question_or_a_resolution_is_a_first_response(
    answer: EventData,
) -> None:
    """Each reaches the customer: the first-response clock (and a complaint's first contact)
    is met by it, not left to breach."""
    shipped = yaml.safe_load(DEFAULT_POLICY.read_text())["sla"]
    world = World(shipped)
    world.on(classified(1), T0)
    world.on(assigned(1), T0)
    world.on(classified(2, category="complaint", complaint=True), T0)
    world.on(answer, minutes(5))
    world.on(answer.model_copy(update=ids(2)), minutes(5))
    met = world.events(ClockMet, "first_response") + world.events(
        ClockMet, "complaint_first_contact"
    )
    assert [(m.number, m.metric, m.late) for m in met] == [
        ("REQ-2026-000001", "first_response", False),
        ("REQ-2026-000002", "complaint_first_contact", False),
    ]
    later = world.run_until(minutes(60 * 24 * 3))
    assert [e for e in later if e.metric in ("first_response", "complaint_first_contact")] == []


def test_waiting_for_the_customer_pauses_the_resolution_clock() -> None:
    world = World()
    world.on(classified(1), T0)
    world.on(assigned(1), T0)
    world.on(WorkStarted(**ids(), agent_id="ann"), minutes(10))
    world.on(WaitingForCustomer(**ids(), agent_id="ann", question="?"), minutes(60))
    [paused] = world.events(ClockPaused, "resolution")
    assert paused.elapsed_s == 3600
    world.run_until(minutes(60 * 48))  # two days waiting: the resolution clock never fires
    assert world.events(ClockWarned, "resolution") == []
    world.on(TicketResumed(**ids(), cause="customer_replied", cause_event_id="x"), minutes(2880))
    clock = world.clock(1, "resolution")
    # 1 h counted before the pause, 23 h left from the reply
    assert clock.deadline == minutes(2880 + 23 * 60)
    world.on(TicketResolved(**ids(), agent_id="ann", resolution="done"), minutes(2880 + 60))
    [met] = world.events(ClockMet, "resolution")
    assert (met.late, met.elapsed_s) == (False, 2 * 3600)


def test_a_waiting_ticket_handed_to_a_supervisor_runs_its_paused_clocks_again() -> None:
    """Escalated while waiting, the ticket is assigned anew: nobody waits for the customer any
    longer, so the resolution clock counts again (it stayed paused until the next question's
    answer, if any ever came)."""
    world = World()
    world.on(classified(1), T0)
    world.on(assigned(1), T0)
    world.on(WorkStarted(**ids(), agent_id="ann"), minutes(10))
    world.on(WaitingForCustomer(**ids(), agent_id="ann", question="?"), minutes(60))
    assert world.clock(1, "resolution").deadline is None  # paused
    world.on(
        TicketEscalated(
            **ids(), level=1, cause="agent", actor="ann", from_group="front-line", to_group=None
        ),
        minutes(120),
    )
    world.on(assigned(1, agent="zoe"), minutes(120))
    # 1 h counted before the question, 23 h left from the hand-over.
    assert world.clock(1, "resolution").deadline == minutes(120 + 23 * 60)


def test_a_pause_never_brings_a_deadline_forward() -> None:
    """A request received five minutes ahead of intake's clock (the bound allows it), asked a
    question and answered at once: the clock runs from its start, not from the answer."""
    world = World()
    ahead = minutes(5)
    world.on(classified(1, received_at=ahead), T0)
    world.on(assigned(1), T0)
    before = world.clock(1, "resolution").deadline
    assert before is not None
    world.on(WorkStarted(**ids(), agent_id="ann"), minutes(1))
    world.on(WaitingForCustomer(**ids(), agent_id="ann", question="?"), minutes(1))
    world.on(TicketResumed(**ids(), cause="customer_replied", cause_event_id="x"), minutes(2))
    assert world.clock(1, "resolution").deadline == before
    world.on(TicketResolved(**ids(), agent_id="ann", resolution="done"), minutes(3))
    [met] = world.events(ClockMet, "resolution")
    assert (met.elapsed_s, met.wall_s) == (0, 0)


def test_a_friday_evening_web_request_counts_business_minutes_only() -> None:
    world = World()
    friday_evening = datetime.fromisoformat("2026-11-20T17:50:00+01:00")
    world.on(classified(1, channel="web", received_at=friday_evening), friday_evening)
    clock = world.clock(1, "first_response")
    assert clock.deadline == datetime.fromisoformat("2026-11-24T09:20:00+01:00")  # Mon: holiday
    fired = world.run_until(datetime.fromisoformat("2026-11-24T09:19:00+01:00"))
    warned = [e for e in fired if isinstance(e, ClockWarned) and e.metric == "first_response"]
    assert [w.due_at for w in warned] == [
        datetime.fromisoformat("2026-11-24T09:12:30+01:00"),  # 75 % = 22.5 business minutes
        datetime.fromisoformat("2026-11-24T09:17:00+01:00"),  # 90 % = 27 business minutes
    ]
    assert world.events(ClockBreached, "first_response") == []


def test_a_reopen_restarts_the_resolution_clock_with_the_same_terms() -> None:
    world = World()
    world.on(classified(1), T0)
    world.on(TicketResolved(**ids(), agent_id="ann", resolution="done"), minutes(60))
    world.on(TicketReopened(**ids(), actor="customer", reason="no"), minutes(120))
    starts = world.events(ClockStarted, "resolution")
    assert [(s.run, s.started_at, s.deadline) for s in starts][1] == (
        2,
        minutes(120),
        minutes(120 + 24 * 60),
    )
    assert world.clock(1, "resolution").open


def test_a_running_clock_keeps_its_policy_when_the_policy_changes() -> None:
    world = World()
    world.on(classified(1), T0)
    changed = {**SLA, "targets": [{**t, "target": "5m"} for t in SLA["targets"]]}
    new_policy, new_version = sla_policy(changed)
    world.keeper.policy, world.keeper.policy_version = new_policy, new_version
    world.on(classified(2), T0)
    old, new = world.clock(1, "first_response"), world.clock(2, "first_response")
    assert (old.target_s, new.target_s) == (1800, 300)
    assert old.policy_version != new.policy_version == new_version
    world.on(TicketResponded(**ids(1), agent_id="a", message="m", first_response=True), minutes(20))
    assert world.events(ClockMet, "first_response")[0].late is False


def test_a_complaint_gets_its_own_first_contact_target() -> None:
    world = World()
    world.on(classified(1, complaint=True, complaint_severity="major"), T0)
    clock = world.clock(1, "complaint_first_contact")
    assert clock.deadline == minutes(10)
    assert world.events(ClockStarted, "complaint_first_contact")[0].rule == "targets[0]"


EXCEPTIONS = {
    **SLA,
    "metrics": {
        **SLA["metrics"],
        "specialist_findings": {"starts": "specialist_requested",
                                "fulfilled_by": ["findings_provided"]},
        "customer_update": {"starts": "dispatched", "fulfilled_by": ["resolved"],
                            "pauses_when_waiting": True, "warns": False, "escalates": False,
                            "restarts_on": ["responded", "waiting_for_customer"]},
    },
    "targets": [
        *SLA["targets"],
        {"metric": "specialist_findings", "target": "2h", "calendar": "always"},
        {"metric": "customer_update", "target": "4h", "calendar": "always"},
    ],
}  # fmt: skip


def test_the_quiet_since_the_last_update_starts_over_with_each_update_and_waits_with_the_ticket(
) -> None:  # fmt: skip
    world = World(EXCEPTIONS)
    ids = {"ticket_id": classified(1).ticket_id, "number": classified(1).number}
    world.on(classified(1), T0)
    world.on(TicketResponded(**ids, agent_id="a", message="hi", first_response=True),
             T0 + timedelta(hours=3))  # fmt: skip
    world.on(WaitingForCustomer(**ids, agent_id="a", question="which?"), T0 + timedelta(hours=5))
    assert world.run_until(T0 + timedelta(hours=20)) == [], "nothing fires while it waits"
    world.on(TicketResumed(**ids, cause="customer replied", cause_event_id="r"),
             T0 + timedelta(hours=21))  # fmt: skip
    world.run_until(T0 + timedelta(hours=30))
    [breach] = world.events(ClockBreached, "customer_update")
    assert breach.due_at == T0 + timedelta(hours=25), "four hours after the customer wrote"
    assert world.events(ClockWarned, "customer_update") == []
    assert world.events(EscalationRaised, "customer_update") == []
    runs = [e.run for e in world.events(ClockStarted, "customer_update")]
    assert runs == [1, 2, 3], "started at dispatch, again at the reply and at the question"


def test_a_quiet_period_ended_by_an_update_in_time_is_met_and_one_after_its_breach_is_not(
) -> None:  # fmt: skip
    """Compliance counts each run of the quiet clock (sla's and the console's projections keep
    the replaced ones): a run the customer's update ended within the target was met."""
    world = World(EXCEPTIONS)
    ids = {"ticket_id": classified(1).ticket_id, "number": classified(1).number}
    world.on(classified(1), T0)
    world.on(TicketResponded(**ids, agent_id="a", message="hi", first_response=True),
             T0 + timedelta(hours=3))  # fmt: skip
    world.run_until(T0 + timedelta(hours=8))  # the second run breaches at 7 h
    world.on(TicketResponded(**ids, agent_id="a", message="news", first_response=False),
             T0 + timedelta(hours=9))  # fmt: skip

    runs: list[SlaClock] = []
    clock: SlaClock | None = None
    for event in world.events(EventData, "customer_update"):
        if isinstance(event, ClockStarted) and clock is not None:
            runs.append(clock)
        clock = fold(clock, event)
    assert [(r.run, r.status, r.met_at, r.breached_at) for r in runs] == [
        (1, "met", T0 + timedelta(hours=3), None),
        (2, "stopped", None, T0 + timedelta(hours=7)),
    ], "met by the update at 3 h; breached at 7 h, and the update at 9 h does not undo it"
    assert [r.has_outcome for r in runs] == [True, True]
    assert clock is not None and (clock.run, clock.status) == (3, "running")


def test_an_update_after_the_target_the_timer_had_not_caught_up_with_counts_as_breached() -> None:
    """The breach waits for the ticket's partition to be read past the due moment, so an update
    can come first: its period was still late. sla judges it at the stop (the projections
    must not guess), and sends no breach: the customer has just heard from the desk."""
    world = World(EXCEPTIONS)
    ids = {"ticket_id": classified(1).ticket_id, "number": classified(1).number}
    world.on(classified(1), T0)
    world.on(assigned(1, "a"), T0)
    world.on(
        TicketResponded(**ids, agent_id="a", message="hi", first_response=True),
        T0 + timedelta(hours=3),
    )  # fmt: skip  (in time: run 1 met)
    world.on(
        TicketResponded(**ids, agent_id="a", message="news", first_response=False),
        T0 + timedelta(hours=8),
    )  # fmt: skip  (due at 7 h; no timer ran)

    events = world.events(EventData, "customer_update")
    stops = [e for e in events if isinstance(e, ClockStopped)]
    assert [(s.run, s.in_time, s.agent_id) for s in stops] == [(1, True, "a"), (2, False, "a")]
    assert not [e for e in events if isinstance(e, ClockBreached)], "no notice after the update"
    runs: list[SlaClock] = []
    clock: SlaClock | None = None
    for event in events:
        if isinstance(event, ClockStarted) and clock is not None:
            runs.append(clock)
        clock = fold(clock, event)
    assert [(r.run, r.met_at, r.breached_at) for r in runs] == [
        (1, T0 + timedelta(hours=3), None),
        (2, None, T0 + timedelta(hours=7)),
    ], "met by the update at 3 h; the one at 8 h came an hour after the deadline"


REPEATING = {
    **EXCEPTIONS,
    "metrics": {
        **EXCEPTIONS["metrics"],
        "customer_update": {**EXCEPTIONS["metrics"]["customer_update"], "repeats": True},
    },
}


def test_a_clock_that_repeats_breaches_again_after_each_further_target_of_quiet() -> None:
    """One progress notice per quiet period (the notice answers each breach), not one in all."""
    world = World(REPEATING)
    world.on(classified(1), T0)
    world.run_until(T0 + timedelta(hours=13))
    breaches = world.events(ClockBreached, "customer_update")
    assert [(b.run, b.due_at) for b in breaches] == [
        (1, T0 + timedelta(hours=4)),
        (2, T0 + timedelta(hours=8)),
        (3, T0 + timedelta(hours=12)),
    ]
    stopped = world.events(ClockStopped, "customer_update")
    assert [s.reason for s in stopped] == ["repeated"] * 3
    clock = world.clock(1, "customer_update")
    assert (clock.run, clock.open, clock.breached_at) == (4, True, None), "running again"
    world.on(TicketResponded(**ids(), agent_id="a", message="hi", first_response=True),
             T0 + timedelta(hours=14))  # fmt: skip
    assert world.clock(1, "customer_update").deadline == T0 + timedelta(hours=18), "an update"
    assert world.events(EscalationRaised, "customer_update") == []


def test_a_repeating_clock_fired_late_owes_one_breach_not_one_per_period_missed() -> None:
    world = World(REPEATING)
    world.on(classified(1), T0)
    clock = world.clock(1, "customer_update")
    fired = clock.fire(T0 + timedelta(hours=13))  # sla was down for nine hours
    assert [type(e).__name__ for e in fired] == ["ClockBreached", "ClockStopped", "ClockStarted"]
    restarted = fired[-1]
    assert isinstance(restarted, ClockStarted) and restarted.repeats
    assert restarted.deadline == T0 + timedelta(hours=17), "four hours from the late firing"


def test_a_metric_that_repeats_may_not_climb_the_ladder() -> None:
    bad = {
        **EXCEPTIONS,
        "metrics": {
            **EXCEPTIONS["metrics"],
            "customer_update": {
                **EXCEPTIONS["metrics"]["customer_update"],
                "repeats": True,
                "escalates": True,
            },
        },
    }
    with pytest.raises(ValueError, match="repeats starts again at its breach"):
        sla_policy(bad)


def test_a_specialist_request_is_timed_for_the_group_asked_and_each_request_anew() -> None:
    world = World(EXCEPTIONS)
    ids = {"ticket_id": classified(1).ticket_id, "number": classified(1).number}
    world.on(classified(1), T0)
    world.on(TicketAssigned(**ids, group_id="front-line", agent_id="li.na", strategy="s",
                            reason="r", cause="classified", policy_version="v"), T0)  # fmt: skip
    asked = {"actor": "li.na", "agent_id": "li.na", "to_group": "network", "question": "?"}
    world.on(SpecialistRequested(**ids, **asked), T0 + timedelta(minutes=10))
    clock = world.clock(1, "specialist_findings")
    assert (clock.group_id, clock.agent_id) == ("network", None)
    world.on(FindingsProvided(**ids, actor="wu.hao", from_group="network", findings="ok"),
             T0 + timedelta(minutes=70))  # fmt: skip
    [met] = world.events(ClockMet, "specialist_findings")
    assert (met.late, met.elapsed_s, met.group_id) == (False, 3600, "network")
    world.on(SpecialistRequested(**ids, **asked), T0 + timedelta(hours=2))
    world.run_until(T0 + timedelta(hours=4, minutes=1))
    [breach] = world.events(ClockBreached, "specialist_findings")
    assert (breach.run, breach.due_at, breach.group_id) == (2, T0 + timedelta(hours=4), "network")
    [level_1] = world.events(EscalationRaised, "specialist_findings")
    assert level_1.group_id == "network"
    # Each says whose clock it is: the group asked's, not the ticket's owner's.
    assert (met.specialists, breach.specialists, level_1.specialists) == (True, True, True)
    [own] = world.events(ClockBreached, "first_response")
    assert (own.specialists, own.agent_id) == (False, "li.na")


@pytest.mark.parametrize("closed", [True, False], ids=["closed", "still open"])
def test_an_event_taken_again_changes_no_clock(closed: bool) -> None:
    """dispatch's store replayed, or the broker read from the start after sla's processed ids
    were purged: the ticket's events come again, each at its place in the ticket's stream. A
    reopen taken twice restarted the resolution clock of a closed ticket (or a second run of an
    open one's), which then breached and escalated again."""
    world = World()
    reopened = TicketReopened(**ids(), actor="customer", reason="still broken")
    resolved = TicketResolved(**ids(), agent_id="ann", resolution="done")
    history: list[tuple[EventData, datetime]] = [
        (classified(1), T0),
        (assigned(1), T0),
        (resolved, minutes(5)),
        (reopened, minutes(60)),
    ]
    if closed:
        history += [
            (resolved, minutes(70)),
            (TicketClosed(**ids(), actor="system", reason="resolved 7d ago"), minutes(90)),
        ]
    for version, (event, at) in enumerate(history, start=1):
        world.on(event, at, version)
    taken = len(world.recorded.events())
    runs = world.clock(1, "resolution").run
    for version, (event, at) in enumerate(history, start=1):  # all of it again
        world.on(event, at, version)
    assert len(world.recorded.events()) == taken
    assert world.clock(1, "resolution").run == runs
    if closed:
        assert world.run_until(minutes(60 * 24 * 30)) == [], "nothing left to fire"
    later = TicketResponded(**ids(), agent_id="ann", message="Fixed?", first_response=False)
    world.on(later, minutes(200), len(history) + 1)
    assert world.keeper.tickets[ids()["ticket_id"]].read_version == len(history) + 1

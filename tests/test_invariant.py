"""The fault suite's judge (tests/support/invariant.py) sees each way a promise can break —
a checker that cannot fail would make every fault scenario pass."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from typing import Any

import pytest

from services import build_service, desk_settings, service_names
from shared.service import Service
from tests.support.invariant import Delivery, Snapshot, Stored, judge
from tests.support.observer import Seen
from tests.support.traffic import Poison

pytestmark = pytest.mark.unit

TICKET = "00000000-0000-7000-8000-000000000001"


@cache
def services() -> dict[str, Service]:
    settings = desk_settings(topic_prefix="", kafka_bootstrap_servers="127.0.0.1:9092")  # unused
    return {name: build_service(name, settings) for name in service_names()}


def event(service: str, kind: str, n: int, cause: str | None = None, **data: Any) -> Stored:
    return Stored(f"{service}-{n}", f"servicedesk.{kind}.v1", f"ticket-{TICKET}", cause, data)


def seen(topic: str, event_id: str | None = None, **headers: str) -> Seen:
    return Seen(topic, 0, 0, "", {**({"ce_id": event_id} if event_id else {}), **headers}, 0, 0.0)


def world() -> Snapshot:
    """One request, recorded, triaged, classified, assigned, clocked, both notices delivered,
    and one agent command applied: everything on its topic."""
    events = {
        "intake": [
            event("intake", "ticket.received", 1, channel="email", channel_message_id="m1"),
            event("intake", "ticket.triaged", 2, ticket_id=TICKET),
        ],
        "dispatch": [
            event("dispatch", "ticket.classified", 1, "intake-2", ticket_id=TICKET),
            event("dispatch", "ticket.assigned", 2, "intake-2", ticket_id=TICKET),
            event("dispatch", "ticket.accepted", 3, "c1", ticket_id=TICKET),
        ],
        "sla": [
            event(
                "sla",
                "sla.clock_started",
                1,
                "dispatch-1",
                ticket_id=TICKET,
                metric="resolution",
                clock_id="c",
                run=1,
            )
        ],
        "notify": [
            event("notify", "notification.sent", 1, "intake-2", notice_key="k1"),
            event("notify", "notification.sent", 2, "dispatch-2", notice_key="k2"),
        ],
    }
    topics: dict[str, list[Seen]] = {}
    for name, stored in events.items():
        for e in stored:
            topic = services()[name].topic_for(e.type)
            topics.setdefault(topic, []).append(seen(topic, e.event_id))
    return Snapshot(
        events=events,
        deliveries=[
            Delivery("k1", "intake-2", "acknowledgement", "sent"),
            Delivery("k2", "dispatch-2", "assignment", "sent"),
        ],
        lag={"dispatch.commands": 0},
        topics=topics,
        arrived=Counter({"k1": 1, "k2": 1}),
        accepted=["email:m1"],
        commands=["c1"],
    )


def test_a_world_that_kept_its_promise_holds() -> None:
    figures = judge(world(), services())
    assert figures.holds, figures.problems
    assert (figures.requests_accepted, figures.tickets, figures.events_stored) == (1, 1, 8)
    assert (figures.notices, figures.commands) == (2, 1)


def lose_a_request(w: Snapshot) -> None:
    w.accepted = [*w.accepted, "web:m2"]


def record_an_effect_twice(w: Snapshot) -> None:
    again = replace(w.events["dispatch"][0], event_id="dispatch-9")
    w.events["dispatch"].append(again)
    w.topics["dispatch.events"].append(seen("dispatch.events", "dispatch-9"))


def never_publish(w: Snapshot) -> None:
    w.topics["sla.events"] = []


def never_deliver(w: Snapshot) -> None:
    w.arrived = Counter({"k1": 1})


def leave_a_notice_unmade(w: Snapshot) -> None:
    w.deliveries = w.deliveries[:1]
    w.arrived = Counter({"k1": 1})
    w.events["notify"] = w.events["notify"][:1]


def leave_a_command_unanswered(w: Snapshot) -> None:
    w.commands = [*w.commands, "c2"]


def dead_letter_a_good_message(w: Snapshot) -> None:
    w.topics["intake.events.dlq"] = [seen("intake.events.dlq", dlq_reason="handler_failed")]


def leave_poison_unanswered(w: Snapshot) -> None:
    w.poisons = [Poison("p1", "garbage", "intake.events", 0, 7)]


def fall_behind(w: Snapshot) -> None:
    w.lag = {"dispatch.commands": 3}


@pytest.mark.parametrize(
    ("breach", "figure", "value"),
    [
        (lose_a_request, "requests_lost", 1),
        (record_an_effect_twice, "duplicated_effects", 1),
        (never_publish, "events_missing_on_topics", 1),
        (never_deliver, "notices_missing", 1),
        (leave_a_notice_unmade, "notices_missing", 1),
        (leave_a_command_unanswered, "effects_missing", 1),
        (dead_letter_a_good_message, "unexpected_dead_letters", 1),
        (leave_poison_unanswered, "poison_unanswered", 3),  # dispatch's, notify's, the console's
        (fall_behind, "consumer_lag", {"dispatch.commands": 3}),
    ],
)
def test_each_broken_promise_is_seen(
    breach: Callable[[Snapshot], None], figure: str, value: object
) -> None:
    w = world()
    breach(w)
    figures = judge(w, services())
    assert not figures.holds
    assert getattr(figures, figure) == value, figures.problems


def test_repeats_are_a_cost_not_a_breach() -> None:
    w = world()
    w.topics["intake.events"].append(seen("intake.events", "intake-1"))
    w.arrived["k2"] += 1
    figures = judge(w, services())
    assert figures.holds, figures.problems
    assert (figures.topic_repeats, figures.notice_repeats) == (1, 1)


def test_poison_answered_by_every_consumer_of_its_topic_holds() -> None:
    w = world()
    w.poisons = [Poison("p1", "garbage", "intake.events", 0, 7)]
    w.topics["intake.events.dlq"] = [
        seen(
            "intake.events.dlq",
            **{"x-desk-poison": "p1", "dlq_reason": "undecodable", "dlq_consumer": consumer},
        )
        for consumer in ("dispatch.events", "notify.tickets", "console.events")
    ]
    figures = judge(w, services())
    assert figures.holds, figures.problems


def test_a_notice_published_on_customer_messages_is_not_owed_to_a_receiver() -> None:
    w = world()
    sent = event("notify", "notification.sent", 3, "dispatch-2", notice_key="k3")
    w.events["notify"].append(sent)
    w.topics["notify.events"].append(seen("notify.events", sent.event_id))
    w.deliveries.append(Delivery("k3", "dispatch-2", "agent_reply", "sent", "messages"))
    assert judge(w, services()).holds, "its event on the topic is what counts"
    w.deliveries[-1] = Delivery("k3", "dispatch-2", "agent_reply", "sent", "email")
    assert not judge(w, services()).holds, "an email must arrive"

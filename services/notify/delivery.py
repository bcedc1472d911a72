"""The delivery worker: sends due notices, records each outcome, schedules retries.

Up to ``notify_concurrency`` sends are in flight; as they answer, more due notices are claimed
(a lease, committed before anything is sent), up to ``notify_batch`` in hand, so a receiver
that hangs holds only its own sends until their timeout. Answers are settled as they come,
those that arrived together in one transaction:
sent (``NotificationSent``), retry later (exponential backoff with jitter: the row's ``due_at``
moves, nothing waits), or failed for good (``NotificationFailed`` and a dead letter on
``notify.deliveries.dlq``). One recipient's failures never hold back another's notices.

A sender killed after the channel accepted a notice but before it was settled leaves the row
leased; when the lease ends the notice is sent again *with the same key* (``Message-ID``,
``Idempotency-Key``), which receivers use to drop the repeat. That window — one commit — and a
connection lost while a relay or receiver answers (the notice may have been taken: it is retried
as a failure, never resent in the same attempt) are the only ways a notice can reach a receiver
twice, each time with the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections import Counter as Tally
from collections.abc import Coroutine, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from services.notify import storage
from services.notify.channels import Channels, Outcome, Permanent, Sent
from services.notify.events import DELIVERIES_TOPIC, NotificationFailed, NotificationSent
from services.notify.outcomes import record_outcome
from services.notify.sealing import ERASED_ERROR, ERASED_REASON, opened, sealed_columns
from services.notify.settings import NotifySettings
from services.policy import Policy
from shared.database import Connection
from shared.deadletter import Record
from shared.faults import crash_point
from shared.keystore import KeyStore
from shared.logging import get_logger
from shared.personal import keys_for
from shared.policyfile import PolicySchedule
from shared.provenance import seal
from shared.scheduling import backoff, sleep_until_due
from shared.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from shared.service import Service

log = get_logger(__name__)
DELIVERY_FAILED = "delivery_failed"
"""The dead-letter reason of a notice its channel refused for good, or on every attempt."""
OUTCOMES = Counter(
    "desk_notify_sends_total", "Send attempts by channel and outcome.", ["channel", "outcome"]
)


class Deliverer:
    """The worker (``run``) and its parts; the channels live as long as the service."""

    def __init__(
        self, policy: PolicySchedule[Policy], settings: NotifySettings, keys: KeyStore
    ) -> None:
        self.policy = policy
        self.settings = settings
        self.keys = keys
        self._due = asyncio.Event()

    def wake(self) -> None:
        """Notices were committed that may be due now: claim at once, not at the next poll
        (``notify_interval``, which still finds those another instance enqueued)."""
        self._due.set()

    async def run(self, service: Service) -> None:
        """Send claimed notices ``notify_concurrency`` at a time and claim more as they
        answer: a send that hangs holds its own slot until its timeout, never the others'
        (rounds that waited for their slowest send held every notice behind one bad
        receiver)."""
        settings = self.settings
        channels = await self._channels(service)
        slots = asyncio.Semaphore(settings.notify_concurrency)
        most = settings.notify_batch  # notices in hand: on the wire or waiting for a slot
        enough = max(1, most // 2)  # claims stay batches
        hands = sender_hands(settings)
        # A notice still waiting for a slot when its lease could end mid-send is left to the
        # lease (sent after it, once) rather than risk a second copy.
        patience = latest_start(settings).total_seconds()
        answered: asyncio.Queue[tuple[storage.Delivery, Outcome]] = asyncio.Queue()
        settler = asyncio.create_task(self._settle_forever(service, answered))
        sending: set[asyncio.Task[None]] = set()
        room_again = asyncio.Event()

        def finished(destination: str, task: asyncio.Task[None]) -> None:
            sending.discard(task)
            if hands.give_back(destination) or len(sending) == most - enough:
                room_again.set()

        async def next_due(conn: Connection) -> datetime | None:
            # With a destination's hands full its notices are due and wait: sleep the interval
            # (or until it has room), not the 5 ms a due row would mean.
            return None if hands.full else await storage.next_due(conn)

        try:
            while True:
                if settler.done():
                    settler.result()  # it failed: raise, and the service restarts the worker
                room = most - len(sending)
                room_again.clear()
                self._due.clear()  # before the claim: notices committed during it wake the next
                claimed, erased, leased_at = await self._claim(service, room, hands)
                # The lease runs from the claim's reading of the clock, so the wait is counted
                # from just before it: counted from its commit, a send let go at the last moment
                # could end that long after its lease.
                until = leased_at + patience
                for delivery in erased:  # its customer was erased while it waited: never sent
                    answered.put_nowait((delivery, Permanent(ERASED_ERROR, ERASED_REASON)))
                if claimed:
                    crash_point("notify.before_send")
                for delivery in claimed:
                    gate = hands.take(delivery.destination)
                    send = self._send(channels, (gate, slots), until, delivery, answered)
                    task = asyncio.create_task(send)
                    sending.add(task)
                    task.add_done_callback(functools.partial(finished, delivery.destination))
                if len(claimed) + len(erased) == room:  # perhaps more due: claim on
                    if len(sending) > most - enough:
                        await _first(room_again.wait(), settler)
                else:  # nothing due but for destinations whose hands are full
                    waking = sleep_until_due(
                        service.pool, service.clock, next_due, settings.notify_interval
                    )
                    await _first(waking, settler, room_again, self._due)
        except asyncio.CancelledError:
            # Stopping: the sends on the wire are answered and recorded (up to one timeout),
            # else a notice the channel accepted would stay leased and go again later.
            await _drain(sending, answered, settler, settings.notify_send_timeout)
            raise
        finally:
            for task in sending:
                task.cancel()
            settler.cancel()
            await asyncio.gather(*sending, settler, return_exceptions=True)
            await channels.close()

    async def _channels(self, service: Service) -> Channels:
        """The channels, sending as the policy's sender (the one in force at start)."""
        notifications = self.policy.in_force(await service.clock.now()).policy.notifications
        sender = notifications.sender if notifications else None
        return Channels(
            self.settings,
            sender.name if sender else "servicedesk",
            sender.email if sender else "desk@localhost",
        )

    async def _claim(
        self, service: Service, limit: int, hands: Hands
    ) -> tuple[list[storage.Delivery], list[storage.Delivery], float]:
        """Up to ``limit`` due notices, as many as ``hands`` has room for, leased and opened to
        send; those whose customer was erased; and the loop's time just before the clock was
        read for their lease."""
        leased_at = asyncio.get_running_loop().time()
        if limit <= 0:
            return [], [], leased_at
        async with service.pool.acquire() as conn, conn.transaction():
            leased_at = asyncio.get_running_loop().time()  # not counting the wait for a connection
            now = await service.clock.now(conn)
            lease = now + self.settings.notify_lease
            claimed = await storage.claim(
                conn, now, lease, limit, room=hands.rooms, room_else=hands.most, full=hands.full
            )
            keys = await keys_for(self.keys, conn, sealed_columns(claimed))
        return (*opened(claimed, keys), leased_at)

    async def _send(
        self,
        channels: Channels,
        gates: tuple[asyncio.Semaphore, asyncio.Semaphore],
        until: float,
        delivery: storage.Delivery,
        answered: asyncio.Queue[tuple[storage.Delivery, Outcome]],
    ) -> None:
        """Send once its destination's gate and then a slot are free (waiting at the gate, a
        notice for a receiver that holds sends up takes no slot from the others)."""
        destination, slots = gates
        async with destination, slots:
            if asyncio.get_running_loop().time() > until:
                log.warning("notice left to its lease: no send slot in time",
                            notice=delivery.notice_key, channel=delivery.channel)  # fmt: skip
                return
            outcome = await channels.send(delivery)
        crash_point("notify.after_send")
        OUTCOMES.labels(delivery.channel, type(outcome).__name__.lower()).inc()
        answered.put_nowait((delivery, outcome))

    async def _settle_forever(
        self, service: Service, answered: asyncio.Queue[tuple[storage.Delivery, Outcome]]
    ) -> None:
        """Group commit: every answer that arrived while the last transaction ran is settled in
        the next one, so the sent-but-unrecorded window stays one commit long."""
        while True:
            batch = [await answered.get()]
            while not answered.empty():
                batch.append(answered.get_nowait())
            async with service.pool.acquire() as conn, conn.transaction():
                now = await service.clock.now(conn)
                decided = [_decide(self.settings, d, outcome, now) for d, outcome in batch]
                settled = await storage.settle(conn, decided, now)
                uow = UnitOfWork(conn, service.store, now)
                for settlement in decided:
                    if settlement.delivery.id in settled:
                        await _record(service, conn, uow, settlement)
                await uow.flush()
            # Only a failure writes a dead letter: waking the publisher after every settle cost
            # it a round trip (a clock read and a query) per group commit for nothing.
            if any(s.status == "failed" and s.delivery.id in settled for s in decided):
                service.dead_letters.wake()
            for _ in batch:
                answered.task_done()


def _decide(
    settings: NotifySettings, delivery: storage.Delivery, outcome: Outcome, now: datetime
) -> storage.Settlement:
    if isinstance(outcome, Sent):
        return storage.Settlement(delivery, "sent")
    if isinstance(outcome, Permanent) or delivery.attempts >= settings.notify_max_attempts:
        reason = outcome.reason if isinstance(outcome, Permanent) else "attempts_exhausted"
        return storage.Settlement(
            delivery, "failed", error=outcome.error, reason=reason, answer=outcome.answer
        )
    delay = backoff(
        delivery.attempts,
        settings.notify_retry_backoff,
        settings.notify_retry_backoff_max,
        jitter=True,
    )
    return storage.Settlement(delivery, "pending", due=now + delay, error=outcome.error)


async def _record(
    service: Service, conn: Connection, uow: UnitOfWork, settlement: storage.Settlement
) -> None:
    """The event (and for a failure, the dead letter and the log line) of a settled notice."""
    delivery, error = settlement.delivery, settlement.error or ""
    attempts, version = delivery.attempts, delivery.policy_version
    if settlement.status == "sent":
        record_outcome(uow, NotificationSent, delivery, attempts=attempts, policy_version=version)
    elif settlement.status == "failed":
        reason = settlement.reason or "failed"
        record_outcome(
            uow,
            NotificationFailed,
            delivery,
            attempts=attempts,
            policy_version=version,
            sealed_for=delivery.customer_ref,
            reason=reason,
            error=f"{error}: {settlement.answer}" if settlement.answer else error,
        )
        await _dead_letter(service, conn, delivery, reason, error)
        log.error(
            "notice failed",
            notice=delivery.notice_key,
            channel=delivery.channel,
            attempts=delivery.attempts,
            error=error,
            ticket_number=delivery.number,
        )
    else:
        log.warning(
            "notice not delivered, retrying later",
            notice=delivery.notice_key,
            channel=delivery.channel,
            attempt=delivery.attempts,
            retry_at=settlement.due.isoformat() if settlement.due else None,
            error=error,
        )


def latest_start(settings: NotifySettings) -> timedelta:
    """How long after its claim a notice may still be let go: a send started then and answered
    at the timeout still leaves time to record the answer (a group commit, a second at most)
    before the lease ends. Without it, the answer to a send let go at the last moment could be
    recorded after another claim had taken the notice again, and it went twice."""
    lease, timeout = settings.notify_lease, settings.notify_send_timeout
    recording = min(timedelta(seconds=1), min(lease - timeout, timeout) / 4)
    return lease - timeout - recording


def in_hand_per_destination(settings: NotifySettings, each: int | None = None) -> int:
    """Notices held for one destination at most: as many waves of its share (``each`` sends on
    the wire at once; by default ``notify_destination_concurrency``) as whole sends fit in
    ``lease - timeout`` (about :func:`latest_start`), so that the last wave, behind a receiver
    that answers only at the timeout, still starts a whole send before that — half the sender's
    hands if that is fewer, and never less than one wave. Held beyond, such notices were left
    to their lease and claimed again: an attempt counted for a send never made, and after
    enough of them one failure was their last."""
    if each is None:
        each = settings.notify_destination_concurrency
    timeout = settings.notify_send_timeout
    waves = max(1, (settings.notify_lease - timeout) // timeout)
    return max(1, min(settings.notify_batch // 2, each * waves))


def sender_hands(settings: NotifySettings) -> Hands:
    """Each destination's share of the sender, the SMTP relay's no wider than the connections
    kept to it (``smtp_connections``): a send let through its gate must find a connection at
    once. Waiting for one after the check that it can still finish within its lease, an email
    behind a slow relay outlived the lease and was claimed and sent a second time."""
    each = settings.notify_destination_concurrency
    mail = min(each, settings.smtp_connections)
    by_mail = (mail, in_hand_per_destination(settings, mail))
    return Hands(each, in_hand_per_destination(settings), {"email": by_mail})


class Hands:
    """The notices a sender holds, by destination: at most ``each`` on the wire to one
    destination and ``most`` in hand for it. A receiver that holds its sends up (a webhook
    answering nothing until the timeout) so takes a bounded share of the sender, and its
    notices wait in the table, not in the sender's hands, while it is full."""

    def __init__(
        self, each: int, most: int, narrower: Mapping[str, tuple[int, int]] | None = None
    ) -> None:
        self.each = each
        self.most = most
        self.narrower = dict(narrower or {})
        """Destinations with a share of their own: (``each``, ``most``)."""
        self.held: Tally[str] = Tally()
        self._gates: dict[str, asyncio.Semaphore] = {}

    def share(self, destination: str) -> tuple[int, int]:
        """Sends on the wire at once to ``destination``, and notices held for it at most."""
        return self.narrower.get(destination, (self.each, self.most))

    @property
    def rooms(self) -> dict[str, int]:
        """Room left for each destination in hand or of a share of its own (any other: all of
        ``most``)."""
        rooms = {d: most for d, (_, most) in self.narrower.items()}
        rooms.update({d: self.share(d)[1] - n for d, n in self.held.items()})
        return rooms

    @property
    def full(self) -> list[str]:
        return [d for d, n in self.held.items() if n >= self.share(d)[1]]

    def take(self, destination: str) -> asyncio.Semaphore:
        """Hold a notice for ``destination``; its gate lets its share through at once."""
        self.held[destination] += 1
        gate = self._gates.get(destination)
        if gate is None:
            gate = self._gates[destination] = asyncio.Semaphore(self.share(destination)[0])
        return gate

    def give_back(self, destination: str) -> bool:
        """A notice for ``destination`` is done; True when that leaves room for a batch of
        them (half its hands free), so claims stay batches."""
        self.held[destination] -= 1
        left = self.held[destination]
        if left <= 0:
            del self.held[destination], self._gates[destination]
        return left == self.share(destination)[1] // 2


async def _first(
    waking: Coroutine[Any, Any, Any], settler: asyncio.Task[None], *more: asyncio.Event
) -> None:
    """Wait for ``waking`` (or any of ``more`` events) unless the settler dies first."""
    sleep = asyncio.ensure_future(waking)
    others = [asyncio.ensure_future(event.wait()) for event in more]
    try:
        await asyncio.wait({sleep, settler, *others}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (sleep, *others):
            waiter.cancel()


async def _drain(
    sending: set[asyncio.Task[None]],
    answered: asyncio.Queue[Any],
    settler: asyncio.Task[None],
    within: timedelta,
) -> None:
    """On a stop: let the sends in flight answer and their outcomes be recorded, for up to
    ``within`` (a send's own timeout) and one settling after it."""
    with contextlib.suppress(Exception):
        if sending:
            await asyncio.wait(set(sending), timeout=within.total_seconds())
        joined = asyncio.ensure_future(answered.join())
        await asyncio.wait({joined, settler}, timeout=within.total_seconds())
        joined.cancel()


async def _dead_letter(
    service: Service, conn: Connection, delivery: storage.Delivery, reason: str, error: str
) -> None:
    body = {
        "notice_key": delivery.notice_key,
        "number": delivery.number,
        "recipient": delivery.recipient,
        "channel": delivery.channel,
        "template": delivery.template,
        "reason": reason,
    }
    value = json.dumps(body, ensure_ascii=False).encode()
    key = service.keys.signing_key(service.name)
    # Sealed as notify's: a replay (`desk dlq replay` keeps the headers) is taken only so.
    sealed = tuple(seal(key, value)) if key is not None else ()
    record = Record(
        topic=service.settings.topic(DELIVERIES_TOPIC),
        partition=0,
        offset=delivery.id,
        key=delivery.notice_key.encode(),
        value=value,
        headers=(("ce_subject", delivery.ticket_id.encode()), *sealed),
    )
    await service.dead_letters.record(
        conn,
        record,
        consumer="notify.delivery",
        reason=DELIVERY_FAILED,
        error=f"{reason}: {error}",
        attempts=delivery.attempts,
    )

"""The delivery worker: sends due notices, records each outcome, schedules retries.

Each round claims due notices (a lease, committed before anything is sent) and sends them
concurrently; answers are settled as they come, those that arrived together in one transaction:
sent (``NotificationSent``), retry later (exponential backoff with jitter: the row's ``due_at``
moves, nothing waits), or failed for good (``NotificationFailed`` and a dead letter on
``notify.deliveries.dlq``). One recipient's failures never hold back another's notices.

A sender killed after the channel accepted a notice but before it was settled leaves the row
leased; when the lease ends the notice is sent again *with the same key* (``Message-ID``,
``Idempotency-Key``), which receivers use to drop the repeat. This window — one commit — is the
only way a notice can reach a receiver twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Coroutine, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from services.notify import storage
from services.notify.channels import Channels, Outcome, Permanent, Sent
from services.notify.events import DELIVERIES_TOPIC, NotificationFailed, NotificationSent
from services.notify.outcomes import record_outcome
from services.notify.sealing import ERASED_REASON, opened, sealed_columns
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
ERASED_ERROR = "the customer's personal data was erased before the notice was sent"
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

    async def run(self, service: Service) -> None:
        settings = self.settings
        notifications = self.policy.in_force(await service.clock.now()).policy.notifications
        sender = notifications.sender if notifications else None
        channels = Channels(
            settings,
            sender.name if sender else "servicedesk",
            sender.email if sender else "desk@localhost",
        )
        limit = asyncio.Semaphore(settings.notify_concurrency)
        answered: asyncio.Queue[tuple[storage.Delivery, Outcome]] = asyncio.Queue()
        settler = asyncio.create_task(self._settle_forever(service, answered))
        try:
            while True:
                if settler.done():
                    settler.result()  # it failed: raise, and the service restarts the worker
                claimed, erased = await self._claim(service)
                for delivery in erased:  # its customer was erased while it waited: never sent
                    answered.put_nowait((delivery, Permanent(ERASED_ERROR, ERASED_REASON)))
                if claimed:
                    crash_point("notify.before_send")
                    sends = (self._send(channels, limit, d, answered) for d in claimed)
                    await _finish_on_stop(
                        _round(sends, answered, settler), settings.notify_send_timeout
                    )
                elif erased:
                    await _settled(answered, settler)
                if len(claimed) + len(erased) < settings.notify_batch:
                    await sleep_until_due(
                        service.pool, service.clock, storage.next_due, settings.notify_interval
                    )
        finally:
            settler.cancel()
            await asyncio.gather(settler, return_exceptions=True)
            await channels.close()

    async def _claim(
        self, service: Service
    ) -> tuple[list[storage.Delivery], list[storage.Delivery]]:
        """Due notices leased and opened to send, and those whose customer was erased."""
        settings = self.settings
        async with service.pool.acquire() as conn, conn.transaction():
            now = await service.clock.now(conn)
            claimed = await storage.claim(
                conn, now, now + settings.notify_lease, settings.notify_batch
            )
            keys = await keys_for(self.keys, conn, sealed_columns(claimed))
        return opened(claimed, keys)

    async def _send(
        self,
        channels: Channels,
        limit: asyncio.Semaphore,
        delivery: storage.Delivery,
        answered: asyncio.Queue[tuple[storage.Delivery, Outcome]],
    ) -> None:
        async with limit:
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
        return storage.Settlement(delivery, "failed", error=outcome.error, reason=reason)
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
            reason=reason,
            error=error,
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


async def _round(
    sends: Iterable[Awaitable[None]], answered: asyncio.Queue[Any], settler: asyncio.Task[None]
) -> None:
    await asyncio.gather(*sends)
    await _settled(answered, settler)


async def _finish_on_stop(work: Coroutine[Any, Any, None], within: timedelta) -> None:
    """Run a round; if the service stops meanwhile (the worker is cancelled), let it finish —
    the sends in flight answered, their outcomes recorded — for up to ``within``, then stop.

    Cancelled mid-round instead, a notice the channel accepted would stay leased and be sent
    again when its lease ends: a graceful stop would cost what only a crash should.
    """
    round_ = asyncio.ensure_future(work)
    try:
        await asyncio.shield(round_)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(round_, within.total_seconds())
        raise


async def _settled(answered: asyncio.Queue[Any], settler: asyncio.Task[None]) -> None:
    """Wait until every answer of the round is settled (before the next claim: the window in
    which a sent notice is not yet recorded stays short); raise if the settler died."""
    joined = asyncio.ensure_future(answered.join())
    await asyncio.wait([joined, settler], return_when=asyncio.FIRST_COMPLETED)
    if settler.done():
        joined.cancel()
        settler.result()
        raise RuntimeError("the settler stopped")


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

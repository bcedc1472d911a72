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
import json
import random
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from services.notify import storage
from services.notify.channels import Channels, Outcome, Outgoing, Permanent, Sent
from services.notify.events import DELIVERIES_TOPIC, NotificationFailed, NotificationSent
from services.notify.outcomes import record_outcome
from services.policy import Policy
from shared.database import Connection
from shared.deadletter import Reason, Record
from shared.faults import crash_point
from shared.logging import get_logger
from shared.policyfile import PolicyWatch
from shared.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from shared.service import Service

log = get_logger(__name__)
OUTCOMES = Counter(
    "desk_notify_sends_total", "Send attempts by channel and outcome.", ["channel", "outcome"]
)


class Deliverer:
    """The worker (``run``) and its parts; the channels live as long as the service."""

    def __init__(self, policy: PolicyWatch[Policy]) -> None:
        self.policy = policy

    async def run(self, service: Service) -> None:
        settings = service.settings
        notifications = self.policy.current()[0].notifications
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
                claimed = await self._claim(service)
                if claimed:
                    crash_point("notify.before_send")
                    await asyncio.gather(
                        *(self._send(channels, limit, d, answered) for d in claimed)
                    )
                    await _settled(answered, settler)
                if len(claimed) < settings.notify_batch:
                    await self._idle(service)
        finally:
            settler.cancel()
            await asyncio.gather(settler, return_exceptions=True)
            await channels.close()

    async def _claim(self, service: Service) -> list[storage.Delivery]:
        settings = service.settings
        async with service.pool.acquire() as conn, conn.transaction():
            now = await service.clock.now(conn)
            return await storage.claim(
                conn, now, now + settings.notify_lease, settings.notify_batch
            )

    async def _idle(self, service: Service) -> None:
        interval = service.settings.notify_interval.total_seconds()
        async with service.pool.acquire() as conn:
            due = await storage.next_due(conn)
            now = await service.clock.now(conn)
        wait = interval if due is None else min(interval, (due - now).total_seconds())
        await asyncio.sleep(max(0.005, wait))

    async def _send(
        self,
        channels: Channels,
        limit: asyncio.Semaphore,
        delivery: storage.Delivery,
        answered: asyncio.Queue[tuple[storage.Delivery, Outcome]],
    ) -> None:
        outgoing = Outgoing(
            key=delivery.notice_key,
            ticket_id=delivery.ticket_id,
            number=delivery.number,
            channel=delivery.channel,
            address=delivery.address,
            template=delivery.template,
            language=delivery.language,
            subject=delivery.subject,
            body=delivery.body,
        )
        async with limit:
            outcome = await channels.send(outgoing)
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
                uow = UnitOfWork(conn, service.store, now)
                for delivery, outcome in batch:
                    await _settle(service, conn, uow, delivery, outcome, now)
                await uow.flush()
            for _ in batch:
                answered.task_done()


async def _settle(  # noqa: PLR0917 - private; one call site
    service: Service,
    conn: Connection,
    uow: UnitOfWork,
    delivery: storage.Delivery,
    outcome: Outcome,
    now: datetime,
) -> None:
    settings = service.settings
    if isinstance(outcome, Sent):
        if await storage.finish(conn, delivery, "sent", now, None):
            record_outcome(
                uow,
                NotificationSent,
                delivery,
                attempts=delivery.attempts,
                policy_version=delivery.policy_version,
            )
        return
    if isinstance(outcome, Permanent) or delivery.attempts >= settings.notify_max_attempts:
        if await storage.finish(conn, delivery, "failed", now, outcome.error):
            reason = "refused" if isinstance(outcome, Permanent) else "attempts_exhausted"
            record_outcome(
                uow,
                NotificationFailed,
                delivery,
                attempts=delivery.attempts,
                policy_version=delivery.policy_version,
                reason=reason,
                error=outcome.error,
            )
            await _dead_letter(service, conn, delivery, reason, outcome.error)
            log.error(
                "notice failed",
                notice=delivery.notice_key,
                channel=delivery.channel,
                attempts=delivery.attempts,
                error=outcome.error,
                ticket_number=delivery.number,
            )
        return
    due = now + _backoff(service, delivery.attempts)
    await storage.retry_later(conn, delivery, due, outcome.error)
    log.warning(
        "notice not delivered, retrying later",
        notice=delivery.notice_key,
        channel=delivery.channel,
        attempt=delivery.attempts,
        retry_at=due.isoformat(),
        error=outcome.error,
    )


async def _settled(answered: asyncio.Queue[Any], settler: asyncio.Task[None]) -> None:
    """Wait until every answer of the round is settled (before the next claim: the window in
    which a sent notice is not yet recorded stays short); raise if the settler died."""
    joined = asyncio.ensure_future(answered.join())
    await asyncio.wait([joined, settler], return_when=asyncio.FIRST_COMPLETED)
    if settler.done():
        joined.cancel()
        settler.result()
        raise RuntimeError("the settler stopped")


def _backoff(service: Service, attempts: int) -> timedelta:
    """Exponential, capped, with jitter (half to all of it): retries of many notices spread."""
    settings = service.settings
    ceiling = min(
        settings.notify_retry_backoff * 2 ** (attempts - 1), settings.notify_retry_backoff_max
    )
    jittered: timedelta = ceiling * random.uniform(0.5, 1.0)
    return jittered


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
    record = Record(
        topic=service.settings.topic(DELIVERIES_TOPIC),
        partition=0,
        offset=delivery.id,
        key=delivery.notice_key.encode(),
        value=json.dumps(body, ensure_ascii=False).encode(),
        headers=(("ce_subject", delivery.ticket_id.encode()),),
    )
    await service.dead_letters.send(
        conn,
        record,
        consumer="notify.delivery",
        reason=Reason.DELIVERY_FAILED,
        error=f"{reason}: {error}",
        attempts=delivery.attempts,
    )

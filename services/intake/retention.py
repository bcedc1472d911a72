"""Retention of customers' personal data: forgotten a policy period after their last ticket closed.

The policy's ``intake.retention`` (none by default: kept until ``desk customer erase``) is how
long a customer's data outlives their tickets. intake learns when each ticket closes from
dispatch (``servicedesk.ticket.closed``) and, every ``DESK_PROCESSED_PURGE_INTERVAL``, destroys
the data key of every customer whose tickets all closed longer ago than that — and of every
subject that never had a ticket (a refused request's bytes) made longer ago — recording
``servicedesk.customer.erased`` as an operator's erasure does. Its dead letters older than the
retention, which hold requests as the adapters sent them, are purged with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from services.dispatch.events import TicketClosed
from services.intake.events import CustomerErased, customer_stream
from services.policy import Policy
from shared.consumer import Delivered, Inbound
from shared.database import Connection
from shared.durations import format_duration
from shared.eventstore import ANY_VERSION
from shared.keystore import KeyStore
from shared.logging import get_logger
from shared.policyfile import PolicySchedule
from shared.service import Service, Worker, every
from shared.unit_of_work import Cause, UnitOfWork

log = get_logger(__name__)

FORGET_BATCH = 500
"""Customers forgotten per round (the next round takes the rest)."""


async def record_closures(uow: UnitOfWork, messages: Sequence[Inbound[Delivered]]) -> None:
    """dispatch's closed tickets (read with its follow-up requests): when each closed, for the
    retention of its customer's data."""
    closed = [m.message for m in messages if isinstance(m.message.data, TicketClosed)]
    if closed:
        await uow.conn.execute(
            "UPDATE tickets t SET closed_at = greatest(t.closed_at, c.at) "
            "FROM unnest($1::uuid[], $2::timestamptz[]) AS c(ticket_id, at) "
            "WHERE t.ticket_id = c.ticket_id",
            [m.data.ticket_id for m in closed],  # type: ignore[attr-defined]
            [m.envelope.time for m in closed],
        )


def forgetting(policy: PolicySchedule[Policy], keys: KeyStore, interval: timedelta) -> Worker:
    """The worker that forgets customers past the retention (doing nothing while it is none)."""

    async def forget_customers(service: Service) -> None:
        async with service.pool.acquire() as conn:
            async with conn.transaction():
                now = await service.clock.now(conn)
                current, _ = await policy.adopt(conn, now)
                retention = current.policy.intake.retention
                if retention is None:
                    return
                cutoff = now - retention
                forgotten = await _forget(conn, service, keys, now, retention)
            async with conn.transaction():  # apart: the erasures' lock is not held for it
                purged = await conn.fetchval(
                    "WITH gone AS (DELETE FROM dead_letters WHERE recorded_at < $1 RETURNING 1) "
                    "SELECT count(*) FROM gone",
                    cutoff,
                )
        if forgotten or purged:
            log.info(
                "personal data past its retention forgotten",
                customers=forgotten,
                dead_letters=purged,
            )

    return every(interval, forget_customers)


_PAST_RETENTION = (
    "SELECT t.customer_ref FROM tickets t JOIN {keys} k ON k.ref = t.customer_ref "
    "WHERE k.erased_at IS NULL GROUP BY t.customer_ref "
    "HAVING bool_and(t.closed_at IS NOT NULL) "
    "AND max(greatest(t.closed_at, t.last_reply_at)) < $1 "
    "UNION SELECT k.ref FROM {keys} k WHERE k.erased_at IS NULL AND k.created_at < $1 "
    "AND NOT EXISTS (SELECT 1 FROM tickets t WHERE t.customer_ref = k.ref) LIMIT $2"
)
"""Customers whose tickets all closed — and were last replied to — before the cutoff, and
subjects with no ticket made before it. A reply to a closed ticket counts: it is on its way to
a follow-up ticket (dispatch answers it), which must find the customer's key still there."""


async def _forget(
    conn: Connection,
    service: Service,
    keys: KeyStore,
    now: datetime,
    retention: timedelta,
) -> int:
    """Erase the customers past the retention; how many. Looked for first without the
    erasures' lock — most rounds find no one, and the lock holds intake's batches off — then
    again under it: a batch in flight has committed its new ticket or reply by then."""
    query, cutoff = _PAST_RETENTION.format(keys=keys.table), now - retention
    if not await conn.fetch(query, cutoff, 1):
        return 0
    await keys.hold_for_erasing(conn)
    rows = await conn.fetch(query, cutoff, FORGET_BATCH)
    uow = UnitOfWork(conn, service.store, now)
    why = f"retention: {format_duration(retention)} after the last closed ticket"
    for (ref,) in rows:
        if await keys.erase(conn, ref, now):
            erased = CustomerErased(ref=ref, erased_at=now, erased_by="retention", reason=why)
            record = uow.caused_by(Cause(customer_stream(ref)))
            record(customer_stream(ref), [erased], expected_version=ANY_VERSION)
    await uow.flush()
    return len(rows)

"""A rule's limit on one customer's notices (``at_most``).

The acknowledgement is an automatic answer, and RFC 3834 asks that one never answer a sender
without end: a mail loop the email channel's rules miss, or a flood of requests forging one
person's address, would otherwise have the desk mail them once a request. Every request still
becomes a ticket; only the notices past the limit are recorded as failed ``limited`` and not
sent (kept, sealed, like any notice: what would have been said stays on record).

Counted per customer — the pseudonym of the data subject, one person whatever address a request
came from — and template, over the rule's window, from ``deliveries``, in the transaction that
stores the new ones and under a lock per customer, so two batches of one customer's tickets
count each other's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from services.notify import storage
from services.notify.rules import Notice, NoticeFacts
from shared.database import Connection
from shared.durations import format_duration
from shared.personal import ref_in


async def within_limits(
    conn: Connection, notices: Sequence[Notice], facts: Mapping[str, NoticeFacts], now: datetime
) -> list[Notice]:
    """The notices with their customer named, those past their rule's limit failed
    ``limited``."""
    named = [_named(n, facts) for n in notices]
    capped = [n for n in named if n.at_most and n.customer_ref and not n.failure]
    if not capped:
        return named
    refs = sorted({n.customer_ref for n in capped if n.customer_ref})
    await storage.lock(conn, "notify.limits", refs)
    windows = sorted({_window(n) for n in capped})
    counts = await conn.fetch(
        "SELECT (SELECT count(*) FROM deliveries d WHERE d.customer_ref = w.ref "
        "AND d.template = w.template AND d.created_at > w.since AND d.status <> 'failed') "
        "FROM unnest($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY "
        "AS w(ref, template, since, n) ORDER BY w.n",
        [w[0] for w in windows],
        [w[1] for w in windows],
        [now - w[2] for w in windows],
    )
    told = {window: row[0] for window, row in zip(windows, counts, strict=True)}
    counted = {id(n) for n in capped}
    out: list[Notice] = []
    for notice in named:
        limit = notice.at_most
        if id(notice) not in counted or limit is None:
            out.append(notice)
            continue
        window = _window(notice)
        if told[window] < limit.count:
            told[window] += 1
            out.append(notice)
            continue
        error = (
            f"{told[window]} {notice.template} notices to this customer within "
            f"{format_duration(limit.per)} already (the rule's at_most)"
        )
        out.append(replace(notice, failure="limited", error=error))
    return out


def _window(notice: Notice) -> tuple[str, str, timedelta]:
    return (
        notice.customer_ref or "",
        notice.template,
        notice.at_most.per if notice.at_most else timedelta(),
    )


def _named(notice: Notice, facts: Mapping[str, NoticeFacts]) -> Notice:
    """A customer notice with the pseudonym of its customer (none for a ticket recorded before
    customers were sealed, or erased: nothing to count by)."""
    ticket = facts.get(notice.ticket_id)
    if notice.recipient != "customer" or ticket is None:
        return notice
    return replace(notice, customer_ref=ref_in(ticket.customer_name))


class LimitWarnings:
    """Which limited notices are worth a warning: the first of each customer and template in
    their rule's window. A flood is what the limit is for, and a warning a request would bury
    the log under it; the others are logged at info (every one is still counted and recorded).
    Per process: another instance, or a restart, warns once more."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._warned: dict[tuple[str, str], datetime] = {}

    def first(self, notice: Notice, now: datetime) -> bool:
        """True for a notice limited in a window not yet warned of (and remember it)."""
        key = (notice.customer_ref or "", notice.template)
        window = notice.at_most.per if notice.at_most else timedelta()
        warned = self._warned.get(key)
        if warned is not None and warned <= now < warned + window:
            return False
        if len(self._warned) >= self.size:
            self._warned.clear()  # bounded; at worst some customer is warned of again
        self._warned[key] = now
        return True

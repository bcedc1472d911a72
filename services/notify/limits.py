"""A rule's limit on its notices (``at_most``).

The acknowledgement is an automatic answer, and RFC 3834 asks that one never answer a sender
without end: a mail loop the email channel's rules miss, or a flood of requests forging one
person's address, would otherwise have the desk mail them once a request. Likewise a customer
mailing reply after reply to one ticket would have its agent told of each. Every request and
reply is still recorded; only the notices past the limit are recorded as failed ``limited`` and
not sent (kept, sealed, like any notice: what would have been said stays on record).

A customer's notices are counted per customer — the pseudonym of the data subject, one person
whatever address a request came from — and template; anyone else's per ticket, recipient and
template. Counted over the rule's window from ``deliveries``, in the transaction that stores the
new ones: under a lock per customer, so two batches of one customer's tickets count each
other's; a ticket's are under the ticket's lock every batch of notify already takes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import NamedTuple

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
    capped = [n for n in named if n.at_most and _counted(n) and not n.failure]
    if not capped:
        return named
    refs = sorted({n.customer_ref for n in capped if n.customer_ref})
    await storage.lock(conn, "notify.limits", refs)
    windows = sorted({_window(n) for n in capped})
    counts = await conn.fetch(
        "SELECT CASE WHEN w.ref <> '' THEN (SELECT count(*) FROM deliveries d "
        "WHERE d.customer_ref = w.ref AND d.template = w.template AND d.created_at > w.since "
        "AND d.status <> 'failed') ELSE (SELECT count(*) FROM deliveries d "
        "WHERE d.ticket_id = w.ticket AND d.recipient = w.recipient "
        "AND d.template = w.template AND d.created_at > w.since AND d.status <> 'failed') END "
        "FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[]) "
        "WITH ORDINALITY AS w(ref, ticket, recipient, template, since, n) ORDER BY w.n",
        [w.ref for w in windows],
        [w.ticket_id or None for w in windows],
        [w.recipient for w in windows],
        [w.template for w in windows],
        [now - w.per for w in windows],
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
        whom = "this customer" if window.ref else f"{notice.recipient} about this ticket"
        error = (
            f"{told[window]} {notice.template} notices to {whom} within "
            f"{format_duration(limit.per)} already (the rule's at_most)"
        )
        out.append(replace(notice, failure="limited", error=error))
    return out


class Window(NamedTuple):
    """What one limit counts: a customer's notices of a template (``ref``), or else one
    recipient's of a template about one ticket."""

    ref: str
    ticket_id: str
    recipient: str
    template: str
    per: timedelta


def _window(notice: Notice) -> Window:
    per = notice.at_most.per if notice.at_most else timedelta()
    if notice.recipient == "customer":
        return Window(notice.customer_ref or "", "", "", notice.template, per)
    return Window("", notice.ticket_id, notice.recipient, notice.template, per)


def _counted(notice: Notice) -> bool:
    """A customer's notice counts once its customer is named (a ticket recorded before
    customers were sealed, or erased, has nothing to count by); anyone else's always."""
    return notice.recipient != "customer" or bool(notice.customer_ref)


def _named(notice: Notice, facts: Mapping[str, NoticeFacts]) -> Notice:
    """A customer notice with the pseudonym of its customer (none for a ticket recorded before
    customers were sealed, or erased: nothing to count by)."""
    ticket = facts.get(notice.ticket_id)
    if notice.recipient != "customer" or ticket is None:
        return notice
    return replace(notice, customer_ref=ref_in(ticket.customer_name))


class LimitWarnings:
    """Which limited notices are worth a warning: the first of each window counted (a customer
    and template, or a ticket, recipient and template). A flood is what the limit is for, and a
    warning a request would bury the log under it; the others are logged at debug (every one is
    still counted and recorded). Per process: another instance, or a restart, warns once more."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._warned: dict[Window, datetime] = {}

    def first(self, notice: Notice, now: datetime) -> bool:
        """True for a notice limited in a window not yet warned of (and remember it)."""
        key = _window(notice)
        warned = self._warned.get(key)
        if warned is not None and warned <= now < warned + key.per:
            return False
        if len(self._warned) >= self.size:
            self._warned.clear()  # bounded; at worst some customer is warned of again
        self._warned[key] = now
        return True

"""Which mail is a request, and which ticket a reply answers. Pure.

**Loops.** Out-of-office answers, delivery reports and list traffic must never open, reopen or
reassign a ticket, nor cause a notice (whose auto-answer would come back: a mail loop). They
are recognised by the signs RFC 3834 and mail software leave (:func:`automatic`).

**Threads.** A reply names its ticket three ways, tried in this order: a ``Message-ID`` notify
gave one of its emails (acknowledgement, agent reply…) in ``In-Reply-To`` / ``References``,
which carries the ticket number; ``[REQ-…]`` in the subject; or the customer's own earlier mail
in those headers (their first mail made the ticket: intake finds it by ``in_reply_to``).
"""

from __future__ import annotations

import hashlib
import re
from email.message import Message
from email.utils import getaddresses

from services.notify.events import NOTICE_HEADER, ticket_of_mail

MAX_KEY_CHARS = 200
"""A channel message id is at most this long (the contract); longer Message-IDs are hashed."""
MAX_REFERENCES = 50

_MESSAGE_ID = re.compile(r"<([^<>\s]{1,998})>")
_SUBJECT_NUMBER = re.compile(r"\[([A-Za-z]{2,8}-\d{4}-\d{4,12})\]")
_BULK = frozenset({"bulk", "junk", "list"})
_DAEMONS = frozenset({"mailer-daemon", "postmaster"})
_AUTOREPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Reply")


class Loop:
    """Why a mail is automatic: the reason codes the adapter records (and counts)."""

    AUTO_SUBMITTED = "auto_submitted"
    BULK_PRECEDENCE = "bulk_precedence"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    OWN_NOTICE = "own_notice"
    """One of servicedesk's own notices come back (a forwarding mailbox, an auto-forward):
    read as a request it would open a ticket whose acknowledgement comes back in turn."""


def automatic(message: Message, envelope_sender: str | None) -> str | None:
    """The reason a mail was sent by a machine (:class:`Loop`), or None for a person's."""
    if message.get(NOTICE_HEADER) is not None or ticket_of_mail(str(message.get("Message-ID", ""))):
        return Loop.OWN_NOTICE
    submitted = str(message.get("Auto-Submitted", "")).split(";")[0].strip().lower()
    if submitted and submitted != "no":
        return Loop.AUTO_SUBMITTED
    if str(message.get("Precedence", "")).strip().lower() in _BULK:
        return Loop.BULK_PRECEDENCE
    for header in _AUTOREPLY_HEADERS:
        value = message.get(header)
        if value is not None and str(value).strip().lower() not in ("no", "false", "0"):
            return Loop.AUTO_REPLY
    return Loop.BOUNCE if _bounce(message, envelope_sender) else None


def _bounce(message: Message, envelope_sender: str | None) -> bool:
    """A delivery report: the null reverse-path (RFC 5321 4.5.5), a mailer daemon or
    postmaster sending, or a report's MIME type."""
    if envelope_sender is not None and envelope_sender.strip() in ("", "<>"):
        return True
    senders = [envelope_sender or "", *(a for _, a in getaddresses([str(message.get("From", ""))]))]
    if any(s.rpartition("@")[0].lower() in _DAEMONS for s in senders if "@" in s):
        return True
    return message.get_content_type() == "multipart/report"


def message_key(message_id: str) -> str:
    """A Message-ID as a channel message id: without its angle brackets, hashed when longer
    than the contract allows (the same id always gives the same key)."""
    bare = message_id.strip().strip("<>").strip()
    if len(bare) <= MAX_KEY_CHARS:
        return bare
    return "sha256:" + hashlib.sha256(bare.encode("utf-8", "replace")).hexdigest()


def references(message: Message) -> list[str]:
    """The Message-IDs a mail answers, newest first: In-Reply-To, then References backwards.
    The thread's first message (the first of References) stays last however long the thread:
    it is the thread's partition key, so a reply is never read before the mail it answers."""
    found: list[str] = []
    for header in ("In-Reply-To", "References"):
        ids = _MESSAGE_ID.findall(str(message.get(header, "")))
        found += ids if header == "In-Reply-To" else reversed(ids)
    unique = list(dict.fromkeys(f"<{i}>" for i in found))
    if len(unique) <= MAX_REFERENCES:
        return unique
    return [*unique[: MAX_REFERENCES - 1], unique[-1]]


def ticket_named(refs: list[str], subject: str) -> str | None:
    """The ticket a mail answers by notify's Message-IDs among its references, else by the
    ``[REQ-…]`` in its subject; None when neither names one."""
    for ref in refs:
        if number := ticket_of_mail(ref):
            return number
    found = _SUBJECT_NUMBER.search(subject)
    return found.group(1).upper() if found else None

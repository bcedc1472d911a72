"""A notice's email as bytes: a ``text/plain`` UTF-8 message, base64 body, with the headers a
reply needs to find its ticket.

Written out directly: the ``email`` package's message objects and generator (even compat32's
``MIMEText``) cost more CPU than the rest of sending a notice. The bytes are what ``MIMEText``
gives, but for the subject, always in RFC 2047 base64 words (``Header`` chose ``q`` or ``b``).
A header value that is not plain printable ASCII (an internationalised address, a control
character) takes the ``email`` package's way, so nothing unusual is written by hand.
"""

from __future__ import annotations

import base64
from email.header import Header
from email.mime.text import MIMEText
from email.utils import formatdate

from services.notify.events import NOTICE_HEADER, mail_message_id
from services.notify.storage import Delivery

LINE = 78
"""Longest header line written (RFC 5322 recommends 78; 998 is the limit)."""
_WORD_BYTES = 45
"""UTF-8 bytes in one encoded word: 60 base64 characters, 72 with ``=?utf-8?b?…?=`` (≤ 75)."""
_FIRST_WORD_BYTES = 42
"""The first word shares its line with ``Subject: ``: 9 + 10 + 56 + 2 = 77 characters."""


def compose(sender: str, notice: Delivery, subject: str) -> bytes:
    """The message of ``notice`` from ``sender`` (an address header, already encoded)."""
    headers = [
        ("From", sender),
        ("To", notice.address),
        ("Date", formatdate(localtime=False)),
        ("Message-ID", mail_message_id(notice.notice_key, notice.number)),
    ]
    if notice.thread:  # the customer's conversation: a reply finds its ticket by these
        headers += [("In-Reply-To", notice.thread.split()[-1]), ("References", notice.thread)]
    headers += [
        # RFC 3834: made by a program, so no responder answers it (sieve/vacation read the
        # first, Exchange the second); a reply a person writes still reaches intake.
        ("Auto-Submitted", "auto-generated"),
        ("X-Auto-Response-Suppress", "All"),
        (NOTICE_HEADER, notice.notice_key),
        ("X-Desk-Ticket", notice.number),
        ("Content-Language", notice.language),
    ]
    if not all(_plain(value) for _, value in headers):
        return _by_the_email_package(headers, subject, notice.body)
    lines = [
        'Content-Type: text/plain; charset="utf-8"',
        "MIME-Version: 1.0",
        "Content-Transfer-Encoding: base64",
        *(_folded(name, value) for name, value in headers[:2]),
        "Subject: " + "\n ".join(_encoded_words(subject)),
        *(_folded(name, value) for name, value in headers[2:]),
        "",
        "",
    ]
    return "\n".join(lines).encode("ascii") + base64.encodebytes(notice.body.encode())


def _plain(value: str) -> bool:
    return value.isascii() and value.isprintable() and max(map(len, value.split()), default=0) < 900


def _folded(name: str, value: str) -> str:
    """``name: value``, folded at spaces into lines of at most :data:`LINE` where it can be."""
    lines = [f"{name}:"]
    for word in value.split():
        if len(lines[-1]) + 1 + len(word) > LINE and lines[-1] != f"{name}:":
            lines.append("")
        lines[-1] += " " + word
    return "\n".join(lines)


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 base64 words, split between characters."""
    chunks: list[bytes] = []
    chunk = b""
    for char in text:
        encoded = char.encode()
        if len(chunk) + len(encoded) > (_WORD_BYTES if chunks else _FIRST_WORD_BYTES):
            chunks.append(chunk)
            chunk = b""
        chunk += encoded
    chunks.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(c).decode()}?=" for c in chunks]


def _by_the_email_package(headers: list[tuple[str, str]], subject: str, body: str) -> bytes:
    # compat32 MIMEText: the modern EmailMessage header machinery costs more CPU still.
    message = MIMEText(body, "plain", "utf-8")
    for name, value in headers[:2]:
        message[name] = value
    message["Subject"] = Header(subject, "utf-8")  # type: ignore[assignment]
    for name, value in headers[2:]:
        message[name] = value
    return message.as_bytes()

"""A mail's bytes as a request of the ``requests.incoming`` contract. Pure.

Sender (``From``, else the envelope sender), subject, the text (the plain part; else the HTML
part reduced to text with the standard library; the quoted previous message of a reply left
out), attachments listed by reference — name, type, size and a ``mid:`` URL naming the part of
this mail (RFC 2392), never the bytes — and the thread (:mod:`.rules`). Everything is bounded to
the contract's limits here, so a long mail is shortened, not refused. Broken MIME never raises:
what cannot be read at all is :class:`Unread` with a reason code, as are automatic mails.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from email.utils import getaddresses
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from services.intake.contract import MAX_ATTACHMENTS, MAX_DESCRIPTION_BYTES, MAX_SUBJECT_CHARS
from services.intake.mail.rules import automatic, message_key, references, ticket_named

CHANNEL = "email"
NO_SENDER = "no_sender"
AMBIGUOUS_SENDER = "ambiguous_sender"
UNREADABLE = "unreadable_mail"
TOO_MANY_PARTS = "too_many_parts"
MAX_PARTS = 200
"""MIME parts a mail may have. The email package reads a part's headers in about half a
millisecond, so ten megabytes of tiny parts held the adapter (every other sender's session
with it) for a minute; no customer's mail has hundreds of parts."""
MAX_HEADER_CHARS = 16_384
"""Of a header, what is read (a From of 10,000 addresses took 4 s; SMTP bounds only the whole
mail): 16 KiB holds the References of a thread of some 300 mails."""
HEADERS_TOO_LARGE = "headers_too_large"
REFUSED = frozenset({NO_SENDER, AMBIGUOUS_SENDER, UNREADABLE, TOO_MANY_PARTS, HEADERS_TOO_LARGE})
"""The reasons a mail is refused (550: its sender hears of it), unlike an automatic mail's."""
HEADER_BUDGET = 131_072
"""Characters of headers read in all, each distinct header once: a customer's mail with twenty
attachments needs some ten thousand."""
_TRUNCATED = "\n[… shortened by the email adapter]"
_QUOTE_HEADER = re.compile(
    r"^(On .{1,300} wrote:|.{1,200}(写道|寫道)[:：]|-{2,}\s*Original Message\s*-{2,}|"
    r"-{2,}\s*原始邮件\s*-{2,})$",
    re.IGNORECASE,
)
_LANGUAGE = re.compile(r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$")


@dataclass(frozen=True)
class Unread:
    """A mail that is not a request: ``reason`` is a code (an automatic mail's: see
    :class:`~services.intake.mail.rules.Loop`; ``no_sender``; ``unreadable_mail``)."""

    reason: str
    detail: str
    message_id: str | None = None


def read_mail(
    raw: bytes, *, envelope_sender: str | None, received_at: datetime
) -> dict[str, Any] | Unread:
    """The request (a dict of the contract) a mail makes, or :class:`Unread`. Never raises."""
    try:
        if (parts := _parts(raw)) > MAX_PARTS:
            return Unread(TOO_MANY_PARTS, f"{parts} MIME parts; at most {MAX_PARTS}")
        message = message_from_bytes(raw, _class=EmailMessage, policy=_Reading())
        return _read(message, raw, envelope_sender, received_at)
    except HeadersTooLarge as error:
        return Unread(HEADERS_TOO_LARGE, str(error))
    except Exception as error:  # whatever the bytes, the adapter gets an answer
        return Unread(UNREADABLE, f"{type(error).__name__}: {error}"[:300])


class HeadersTooLarge(Exception):
    """More header text than :data:`HEADER_BUDGET` to read."""


if TYPE_CHECKING:
    _Policy = EmailPolicy[EmailMessage]
else:
    _Policy = EmailPolicy


class _Reading(_Policy):
    """The standard library's default policy, for one mail: a header is parsed once (the
    package parses it again at every look-up, a dozen a part), at most :data:`MAX_HEADER_CHARS`
    of it, and :data:`HEADER_BUDGET` characters in all, then :class:`HeadersTooLarge`. It
    parses about 3 ms a kilobyte: 200 parts with 16 KiB Content-Types took two minutes."""

    parsed: dict[tuple[str, str], Any]
    spent: int

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "parsed", {})  # a policy's attributes are read-only
        object.__setattr__(self, "spent", 0)

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return super().header_fetch_parse(name, value)
        found = self.parsed.get((name, value))
        if found is None:
            object.__setattr__(self, "spent", self.spent + min(len(value), MAX_HEADER_CHARS))
            if self.spent > HEADER_BUDGET:
                raise HeadersTooLarge(f"over {HEADER_BUDGET} characters of headers to read")
            found = super().header_fetch_parse(name, _cut(value))
            self.parsed[name, value] = found
        return found


def _cut(value: str) -> str:
    """``value`` up to :data:`MAX_HEADER_CHARS`, ended at a comma (between addresses or ids) or
    else a space: cut inside a token, the package's parser can fail with an IndexError."""
    if len(value) <= MAX_HEADER_CHARS:
        return value
    cut = value[:MAX_HEADER_CHARS]
    end = cut.rfind(",")
    if end <= 0:
        end = max(cut.rfind(" "), cut.rfind("\t"))
    return cut[:end] if end > 0 else cut


def _parts(raw: bytes) -> int:
    """The mail's MIME parts, when there may be more than :data:`MAX_PARTS` (0 otherwise):
    every part but the first opens with a line starting ``--``, so a mail with few such lines
    is within at no cost; one with many is counted by the legacy parser, which reads headers
    some twenty times faster than the modern one."""
    if raw.count(b"\n--") < MAX_PARTS:
        return 0
    return sum(1 for _ in message_from_bytes(raw).walk())


def _read(
    message: EmailMessage, raw: bytes, envelope_sender: str | None, received_at: datetime
) -> dict[str, Any] | Unread:
    key = _key(message, raw)
    if reason := automatic(message, envelope_sender):
        return Unread(reason, "an automatic message: recorded, never a request", key)
    if len(_mailboxes(_raw_from(message))) > 1:
        # "victim@example.com <attacker@evil.com>": read as the first, checked by DMARC as the
        # second. Whose it is cannot be told, so it is no one's.
        return Unread(AMBIGUOUS_SENDER, "From names more than one address", key)
    name, address = _sender(message, envelope_sender)
    if not address:
        return Unread(NO_SENDER, "no sender address in From or the envelope", key)
    subject = " ".join(str(message.get("Subject", "")).split())[:MAX_SUBJECT_CHARS]
    refs = references(message)
    text = _text(message)
    number = ticket_named(refs, subject)
    if refs or number:
        text = without_quote(text)
    customer: dict[str, Any] = {"name": name[:200], "email": address}
    language = str(message.get("Content-Language", "")).split(",")[0].strip()
    if _LANGUAGE.match(language):
        customer["language"] = language
    request: dict[str, Any] = {
        "channel": CHANNEL,
        "channel_message_id": key,
        "received_at": received_at.isoformat(),
        "customer": customer,
        "subject": subject or "(no subject)",
        "description": _bounded(text) or "(no text)",
        "attachments": _attachments(message, key),
        "in_reply_to": [message_key(r) for r in refs],
    }
    if number:
        request["reply_to_ticket"] = number
    return request


def _key(message: Message, raw: bytes) -> str:
    """The mail's channel message id: its Message-ID, or (none given) a digest of its bytes, so
    the same mail delivered twice is one request either way."""
    given = str(message.get("Message-ID", "")).strip()
    if given.strip("<>").strip():
        return message_key(given)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _mailboxes(header: str) -> list[tuple[str, str]]:
    """The distinct addresses a ``From`` value names (a display name repeating its address is
    one)."""
    found: dict[str, tuple[str, str]] = {}
    for name, address in getaddresses([header]):
        if "@" in address:
            found.setdefault(address.strip().lower(), (name.strip(), address.strip().lower()))
    return list(found.values())


def _raw_from(message: Message) -> str:
    """``From`` as it came: the parsed header keeps one address of ``a@b <c@d>``."""
    raw = next((str(v) for k, v in message.raw_items() if k.lower() == "from"), "")
    raw = raw[:MAX_HEADER_CHARS]
    return re.sub(r"\r?\n[ \t]", " ", raw)


def _sender(message: Message, envelope_sender: str | None) -> tuple[str, str]:
    if senders := _mailboxes(str(message.get("From", ""))):
        name, address = senders[0]
        return (name or address.split("@")[0]), address
    if envelope_sender and "@" in envelope_sender:
        address = envelope_sender.strip("<> ").lower()
        return address.split("@")[0], address
    return "", ""


def _text(message: EmailMessage) -> str:
    """The plain text of the mail: its first plain part, else its first HTML part as text."""
    plain = html = None
    for part in message.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        kind = part.get_content_type()
        if kind == "text/plain" and plain is None:
            plain = _decoded(part)
        elif kind == "text/html" and html is None:
            html = _decoded(part)
    if plain is not None and plain.strip():
        return plain.strip()
    return html_to_text(html).strip() if html else ""


def _decoded(part: Message) -> str:
    """A text part's content; an unknown charset or a broken transfer encoding is read as UTF-8
    with replacements rather than refused."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content.replace("\x00", "")
    except (LookupError, ValueError, AssertionError):
        pass
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    return data.decode("utf-8", "replace").replace("\x00", "")


def _attachments(message: EmailMessage, key: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for index, part in enumerate(message.walk()):
        if part.is_multipart():
            continue
        filename = part.get_filename()
        if part.get_content_disposition() != "attachment" and not filename:
            continue
        payload = part.get_payload(decode=True)
        content_id = str(part.get("Content-ID", "")).strip().strip("<>")
        found.append(
            {
                "name": " ".join((filename or f"part-{index}").split())[:255] or f"part-{index}",
                "size": len(payload) if isinstance(payload, bytes) else 0,
                "content_type": part.get_content_type(),
                "url": f"mid:{quote(key, safe='@.')}/{quote(content_id or f'part-{index}')}"[:2048],
            }
        )
    return found[:MAX_ATTACHMENTS]


def _bounded(text: str) -> str:
    if len(text.encode()) <= MAX_DESCRIPTION_BYTES:
        return text
    room = MAX_DESCRIPTION_BYTES - len(_TRUNCATED.encode())
    return text.encode()[:room].decode("utf-8", "ignore") + _TRUNCATED


def without_quote(text: str) -> str:
    """A reply without the message it quotes: ``>`` lines and the "On … wrote:" line after
    which only quotation follows. The whole text if nothing else is left."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith(">")]
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and _QUOTE_HEADER.match(lines[-1].strip()):
        lines.pop()
    kept = "\n".join(lines).strip()
    return kept or text


class _TextOfHtml(HTMLParser):
    _SKIPPED = frozenset({"script", "style", "head", "title"})
    _BLOCKS = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIPPED:
            self.skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


MAX_HTML_CHARS = 512 * 1024
"""HTML read into a description at most: its text is cut to 32 KiB anyway."""
_NOT_A_TAG = re.compile(r"<(?![a-zA-Z/!?][^<>]{0,2000}>)")
"""A ``<`` that opens no tag closed before the next ``<``: the standard library's parser
rescans from each such one to the end of the input (``<a<a<a…``: quadratic, a 100 KB mail held
the adapter 12 s), so it is read as the text it is."""


def html_to_text(html: str) -> str:
    """HTML reduced to its text: scripts and styles dropped, blocks on lines of their own. In
    time linear in its size, whatever it holds (:data:`_NOT_A_TAG`, :data:`MAX_HTML_CHARS`)."""
    parser = _TextOfHtml()
    parser.feed(_NOT_A_TAG.sub("&lt;", html[:MAX_HTML_CHARS]))
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()

"""The contract channel adapters publish to ``requests.incoming``, and how bad input is refused.

:func:`read_request` turns the raw bytes of one Kafka record into either a :class:`Request` or a
:class:`Refusal` carrying a reason code and the field it is about. It never raises: whatever the
bytes, the consumer gets an answer. Reason codes are listed in :class:`Reason` (and the README).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from services.vocabulary import Channel, Priority
from shared.mailbox import is_mailbox
from shared.text import has_control, tidy_line, tidy_text

INCOMING_TOPIC = "requests.incoming"
"""Where channel adapters publish requests (key: ``<channel>:<channel_message_id>``)."""
MAX_MESSAGE_BYTES = 256 * 1024
MAX_DESCRIPTION_BYTES = 32 * 1024
MAX_SUBJECT_CHARS = 300
MAX_DEPTH = 8
MAX_ATTACHMENTS = 20
MAX_THREAD = 50
TICKET_NUMBER = re.compile(r"^[A-Z]{2,8}-\d{4}-\d{4,12}$")
_PHONE = re.compile(r"^(\+[1-9][0-9]{5,14}|(?!0+$)[0-9]{6,17})$")
"""E.164 with its ``+`` (a country code never starts with 0; at most 15 digits), or a national
number, or one dialled with an international prefix (``0086…``): numbers a provider can use."""
_LANGUAGE = re.compile(r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$")
_CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")
_BYTES_FIELDS = {"content", "data", "bytes", "base64", "body"}


class Reason:
    """Reason codes on ``requests.rejected`` (one per way a request can be wrong)."""

    MESSAGE_TOO_LARGE = "message_too_large"
    INVALID_ENCODING = "invalid_encoding"
    INVALID_JSON = "invalid_json"
    TOO_DEEP = "too_deep"
    NOT_AN_OBJECT = "not_an_object"
    NUL_CHARACTER = "nul_character"
    CONTROL_CHARACTER = "control_character"
    INVALID_UNICODE = "invalid_unicode"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    BLANK_FIELD = "blank_field"
    UNKNOWN_CHANNEL = "unknown_channel"
    INVALID_PRIORITY = "invalid_priority"
    INVALID_RECEIVED_AT = "invalid_received_at"
    RECEIVED_AT_OUT_OF_RANGE = "received_at_out_of_range"
    SUBJECT_TOO_LONG = "subject_too_long"
    DESCRIPTION_TOO_LONG = "description_too_long"
    FIELD_TOO_LONG = "field_too_long"
    NO_CONTACT_METHOD = "no_contact_method"
    INVALID_EMAIL = "invalid_email"
    INVALID_PHONE = "invalid_phone"
    INVALID_LANGUAGE = "invalid_language"
    INVALID_TICKET_NUMBER = "invalid_ticket_number"
    UNKNOWN_REPLY_TICKET = "unknown_reply_ticket"
    TOO_MANY_ATTACHMENTS = "too_many_attachments"
    ATTACHMENT_BYTES_NOT_ALLOWED = "attachment_bytes_not_allowed"
    INVALID_ATTACHMENT = "invalid_attachment"

    @classmethod
    def all(cls) -> set[str]:
        return {v for k, v in vars(cls).items() if k.isupper()}


def _clean(value: Any) -> Any:
    """Unicode NFC, no surrounding whitespace and no control characters
    (:mod:`shared.text`), for every one-line string the contract carries."""
    if isinstance(value, str):
        return tidy_line(unicodedata.normalize("NFC", value).strip())
    return value


def _clean_text(value: Any) -> Any:
    """As :func:`_clean`, for free text: its line breaks and tabs are kept."""
    if isinstance(value, str):
        return tidy_text(unicodedata.normalize("NFC", value).strip())
    return value


def _an_id(value: Any) -> Any:
    """An id, as :func:`_clean` but refused rather than tidied when it holds a control
    character: two ids differing only there would otherwise become one (a lost request)."""
    if isinstance(value, str):
        value = unicodedata.normalize("NFC", value).strip()
        if has_control(value):
            raise PydanticCustomError(
                Reason.CONTROL_CHARACTER,
                "an id holds no control character, line break, bidi or invisible formatting "
                "character",
            )
    return value


def _not_blank(value: str) -> str:
    if not value:
        raise PydanticCustomError(Reason.BLANK_FIELD, "must not be blank")
    return value


def _bounded(limit: int) -> Any:
    def check(value: str) -> str:
        if len(value) > limit:
            raise PydanticCustomError(Reason.FIELD_TOO_LONG, f"at most {limit} characters")
        return value

    return AfterValidator(check)


Text = Annotated[str, BeforeValidator(_clean), Field(strict=True)]
FreeText = Annotated[str, BeforeValidator(_clean_text), Field(strict=True)]
Id = Annotated[str, BeforeValidator(_an_id), Field(strict=True)]
Name = Annotated[Text, AfterValidator(_not_blank), _bounded(200)]
Label = Annotated[Text, AfterValidator(_not_blank), _bounded(100)]


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    email: Text | None = None
    phone: Text | None = None
    customer_id: Annotated[Id, AfterValidator(_not_blank), _bounded(100)] | None = None
    language: Text | None = None
    tier: Label | None = Field(default=None, description="Service tier, e.g. standard or vip.")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not is_mailbox(value):
            raise PydanticCustomError(Reason.INVALID_EMAIL, "not an e-mail address")
        return value.lower()

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        compact = re.sub(r"[\s().-]", "", value)
        if not _PHONE.match(compact):
            raise PydanticCustomError(Reason.INVALID_PHONE, "not a phone number")
        return compact

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _LANGUAGE.match(value):
            raise PydanticCustomError(Reason.INVALID_LANGUAGE, "not a language tag (e.g. zh-CN)")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> Customer:
        if not (self.email or self.phone):
            raise PydanticCustomError(
                Reason.NO_CONTACT_METHOD, "a customer needs an e-mail address or a phone number"
            )
        return self


class Attachment(BaseModel):
    """A reference to a file the adapter stored elsewhere; never the bytes themselves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[Text, AfterValidator(_not_blank), _bounded(255)]
    size: int = Field(ge=0, le=10 * 1024**3, strict=True)
    content_type: Text
    url: Annotated[Text, _bounded(2048)]

    @model_validator(mode="before")
    @classmethod
    def _no_bytes(cls, value: Any) -> Any:
        if isinstance(value, dict) and _BYTES_FIELDS & set(value):
            raise PydanticCustomError(
                Reason.ATTACHMENT_BYTES_NOT_ALLOWED,
                "attachments are references (name, size, content_type, url), never bytes",
            )
        return value

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str) -> str:
        if not _CONTENT_TYPE.match(value):
            raise PydanticCustomError(Reason.INVALID_ATTACHMENT, "not a content type")
        return value.lower()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://", "s3://", "mid:")):
            raise PydanticCustomError(
                Reason.INVALID_ATTACHMENT, "url must be http(s), s3 or mid: (a part of a mail)"
            )
        return value


class Request(BaseModel):
    """One request as a channel adapter publishes it to ``requests.incoming``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Channel = Field(description="phone, chat, email, web or api.")
    channel_message_id: Annotated[Id, AfterValidator(_not_blank), _bounded(200)] = Field(
        description="The adapter's own id of this message; the same id is the same request."
    )
    received_at: datetime = Field(description="When the channel received it (with time zone).")
    customer: Customer
    subject: Annotated[Text, AfterValidator(_not_blank)]
    description: Annotated[FreeText, AfterValidator(_not_blank)]
    product_line: Label | None = None
    problem_type: Label | None = None
    priority: Priority = "normal"
    reply_to_ticket: Text | None = Field(
        default=None, description="Ticket number this message replies to (REQ-2026-000123)."
    )
    attachments: list[Attachment] = Field(default=[], max_length=MAX_ATTACHMENTS)
    in_reply_to: list[Annotated[Id, AfterValidator(_not_blank), _bounded(200)]] = Field(
        default=[],
        max_length=MAX_THREAD,
        description="Channel message ids of earlier messages on the same channel this one "
        "answers, newest first and the thread's first message last (email: In-Reply-To, then "
        "References backwards). Without reply_to_ticket, one that made a ticket or a reply "
        "makes this message a reply to that ticket (the customer answering their own first "
        "message); none known: a new ticket.",
    )

    @field_validator("received_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise PydanticCustomError(Reason.INVALID_RECEIVED_AT, "needs a time zone offset")
        try:
            value.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+14:00, 9999-12-31T23:59-14:00
            raise PydanticCustomError(
                Reason.INVALID_RECEIVED_AT, "not a moment any clock can hold"
            ) from None
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if len(value) > MAX_SUBJECT_CHARS:
            raise PydanticCustomError(
                Reason.SUBJECT_TOO_LONG, f"at most {MAX_SUBJECT_CHARS} characters"
            )
        return value

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        if len(value.encode()) > MAX_DESCRIPTION_BYTES:
            raise PydanticCustomError(
                Reason.DESCRIPTION_TOO_LONG, f"at most {MAX_DESCRIPTION_BYTES} bytes of UTF-8"
            )
        return value

    @field_validator("reply_to_ticket")
    @classmethod
    def _ticket_number(cls, value: str | None) -> str | None:
        if value is not None and not TICKET_NUMBER.match(value.upper()):
            raise PydanticCustomError(
                Reason.INVALID_TICKET_NUMBER, "not a ticket number (like REQ-2026-000123)"
            )
        return value.upper() if value else None

    @field_validator("product_line", "problem_type")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @property
    def key(self) -> str:
        """The de-duplication key: one ticket per (channel, channel message id)."""
        return f"{self.channel}:{self.channel_message_id}"

    @property
    def thread_key(self) -> str:
        """The partition key: a thread's messages share its first message's key, so intake
        reads a reply after the message it answers, never before (it would open a ticket)."""
        if self.in_reply_to:
            return f"{self.channel}:{self.in_reply_to[-1]}"
        return self.key


@dataclass(frozen=True)
class Refusal:
    """Why a record is not a request: the first problem decides the reason code."""

    reason: str
    field: str
    message: str
    problems: tuple[str, ...] = ()
    channel: str | None = None
    channel_message_id: str | None = None


def read_request(value: bytes) -> Request | Refusal:
    """Validate one record's bytes against the contract. Never raises."""
    if _plain(value):
        # The common case, a well-formed request: pydantic parses and validates in one go.
        try:
            return Request.model_validate_json(value)
        except ValidationError:
            pass  # find out exactly what is wrong below
    document = read_document(value)
    if isinstance(document, Refusal):
        return document
    return validate_request(document)


def read_document(value: bytes) -> dict[str, Any] | Refusal:  # noqa: PLR0911 - one exit per way to be wrong
    """The JSON object a request's bytes hold, or why they hold none a request could be made
    of (too large, not UTF-8, not JSON, too deep, NUL or lone surrogates). Never raises.

    Channel adapters that fill in part of a request themselves (the console's ``POST
    /requests``) read the caller's bytes with it, then :func:`validate_request`."""
    if len(value) > MAX_MESSAGE_BYTES:
        return Refusal(
            Reason.MESSAGE_TOO_LARGE, "", f"{len(value)} bytes; at most {MAX_MESSAGE_BYTES}"
        )
    if b"\x00" in value:
        return Refusal(Reason.NUL_CHARACTER, "", "NUL byte in the message")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as error:
        return Refusal(Reason.INVALID_ENCODING, "", f"not UTF-8: {error.reason} at {error.start}")
    try:
        document = json.loads(text)
    except RecursionError:
        return Refusal(Reason.TOO_DEEP, "", f"nested deeper than {MAX_DEPTH} levels")
    except ValueError as error:
        return Refusal(Reason.INVALID_JSON, "", str(error))
    if not isinstance(document, dict):
        return Refusal(
            Reason.NOT_AN_OBJECT, "", f"a JSON object is expected, not {type(document).__name__}"
        )
    identity = _Identity.of(document)
    # Both walks are only needed when the text could hold what they look for.
    if text.count("[") + text.count("{") > MAX_DEPTH and (depth := _depth(document)) > MAX_DEPTH:
        return identity.refuse(Reason.TOO_DEEP, "", f"nested {depth} levels; at most {MAX_DEPTH}")
    suspicious = "\\u0000" in text or _SURROGATE_ESCAPE.search(text) is not None
    if suspicious and (found := _bad_character(document)):
        reason, path = found
        message = (
            "NUL character in a string"
            if reason == Reason.NUL_CHARACTER
            else "lone surrogate: not a Unicode character"
        )
        return identity.refuse(reason, printable(path), message)
    return document


def _plain(value: bytes) -> bool:
    """Bytes with nothing :func:`read_document` looks for: small, UTF-8, no NUL (raw or
    escaped), no escaped surrogate, shallow enough that nesting cannot exceed the bound."""
    if len(value) > MAX_MESSAGE_BYTES or b"\x00" in value or b"\\u0000" in value:
        return False
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _SURROGATE_ESCAPE.search(text) is None and text.count("[") + text.count("{") <= MAX_DEPTH


def validate_request(document: dict[str, Any]) -> Request | Refusal:
    """A request from a JSON object :func:`read_document` read, or the first reason it is not
    one. Never raises."""
    try:
        return Request.model_validate(document)
    except ValidationError as error:
        return _refusal(error, _Identity.of(document))


@dataclass(frozen=True)
class _Identity:
    """Channel and message id, when readable, so a refusal can be matched by its adapter."""

    channel: str | None
    channel_message_id: str | None

    @classmethod
    def of(cls, document: dict[str, Any]) -> _Identity:
        channel = document.get("channel")
        message_id = document.get("channel_message_id")
        return cls(
            printable(channel[:50]) if isinstance(channel, str) else None,
            printable(message_id[:200]) if isinstance(message_id, str) else None,
        )

    def refuse(
        self, reason: str, field: str, message: str, problems: tuple[str, ...] = ()
    ) -> Refusal:
        return Refusal(reason, field, message, problems, self.channel, self.channel_message_id)


def printable(text: str) -> str:
    """Text safe to echo back in a refusal: NUL and lone surrogates become U+FFFD."""
    return _UNSAFE.sub("\ufffd", text)


def _depth(document: Any) -> int:
    deepest, stack = 0, [(document, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def _bad_character(node: Any, path: str = "") -> tuple[str, str] | None:
    """The first string holding NUL or a lone surrogate (which JSON escapes can smuggle in, and
    which no database or mail server will take), with its reason and path."""
    if isinstance(node, str):
        if "\x00" in node:
            return Reason.NUL_CHARACTER, path or "<root>"
        if _SURROGATE.search(node):
            return Reason.INVALID_UNICODE, path or "<root>"
        return None
    items: Any = ()
    if isinstance(node, dict):
        for key in node:
            if found := _bad_character(key, f"{path}.{key}" if path else str(key)):
                return found
        items = ((f"{path}.{k}" if path else str(k), v) for k, v in node.items())
    elif isinstance(node, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(node))
    for where, value in items:
        if found := _bad_character(value, where):
            return found
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSAFE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


_FIELD_REASONS = {
    ("literal_error", "channel"): Reason.UNKNOWN_CHANNEL,
    ("literal_error", "priority"): Reason.INVALID_PRIORITY,
}
_TYPE_REASONS = {
    "missing": Reason.MISSING_FIELD,
    "extra_forbidden": Reason.UNKNOWN_FIELD,
    "too_long": Reason.TOO_MANY_ATTACHMENTS,
}


def _refusal(error: ValidationError, identity: _Identity) -> Refusal:
    problems = []
    for item in error.errors():
        path = printable(_dotted(item["loc"]))
        problems.append(printable(f"{path or '<root>'}: {item['msg']}"))
    first = error.errors()[0]
    path = printable(_dotted(first["loc"]))
    kind = first["type"]
    last = str(first["loc"][-1]) if first["loc"] else ""
    if kind in Reason.all():
        reason = kind
    elif (kind, last) in _FIELD_REASONS:
        reason = _FIELD_REASONS[(kind, last)]
    elif kind in _TYPE_REASONS:
        reason = _TYPE_REASONS[kind]
    elif last == "received_at":
        reason = Reason.INVALID_RECEIVED_AT
    else:
        reason = Reason.WRONG_TYPE
    return identity.refuse(reason, path, printable(first["msg"]), tuple(problems))


def _dotted(location: tuple[int | str, ...]) -> str:
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out

"""Requests for intake tests: a valid one to start from, and the table of bad ones."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from shared.settings import Settings

RECEIVED_AT = "2026-11-20T09:30:00+08:00"
"""When :func:`valid`'s requests were received."""


def valid(message_id: str = "m-1", **changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "channel": "email",
        "channel_message_id": message_id,
        "received_at": RECEIVED_AT,
        "customer": {"name": "王芳", "email": "wang.fang@example.com", "language": "zh-CN"},
        "subject": "打印机卡纸",
        "description": "三楼的打印机一直卡纸，无法打印。",
        "product_line": "printer",
    }
    request.update(changes)
    return request


def encode(request: dict[str, Any]) -> bytes:
    return json.dumps(request, ensure_ascii=False).encode()


async def intake_clock(
    settings: Settings, at: datetime | None = None, *, also: tuple[str, ...] = ()
) -> Settings:
    """Settings whose intake (and ``also``) read a driven clock, set to ``at`` (default: a
    minute after :data:`RECEIVED_AT`). The policy bounds ``received_at`` by intake's clock, so
    tests sending requests received on a fixed day drive intake's time to that day."""
    from tests.support.time import DrivenTime

    driven = settings.replace(clock="driven")
    await DrivenTime(driven, "intake", *also).set(
        at or datetime.fromisoformat(RECEIVED_AT) + timedelta(minutes=1)
    )
    return driven


def _with(change: Callable[[dict[str, Any]], None], message_id: str = "bad") -> bytes:
    request = copy.deepcopy(valid(message_id))
    change(request)
    return encode(request)


def _deep(levels: int) -> bytes:
    return b'{"channel": "email", "x": ' + b"[" * levels + b"]" * levels + b"}"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(request: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = request
        for key in parents:
            node = node[key]
        node[last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(request: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = request
        for key in parents:
            node = node[key]
        del node[last]

    return change


ATTACHMENT = {
    "name": "photo.jpg",
    "size": 1024,
    "content_type": "image/jpeg",
    "url": "https://files/x",
}

BAD_INPUTS: list[tuple[str, bytes, str, str]] = [
    # (case, bytes, expected reason code, expected field)
    ("invalid JSON", b'{"channel": "email",', "invalid_json", ""),
    ("not UTF-8", b'{"channel": "\xff\xfe"}', "invalid_encoding", ""),
    ("a JSON array", b"[1, 2, 3]", "not_an_object", ""),
    ("a JSON string", b'"hello"', "not_an_object", ""),
    ("empty body", b"", "invalid_json", ""),
    ("deep nesting", _deep(50), "too_deep", ""),
    ("pathological nesting", _deep(100_000), "too_deep", ""),
    ("NUL byte", encode(valid("bad")).replace("卡纸".encode(), b"\x00"), "nul_character", ""),
    ("escaped NUL", _with(_set("description", "a\u0000b")), "nul_character", "description"),
    (
        "a tab in an id",
        _with(_set("channel_message_id", "m\t1")),
        "control_character",
        "channel_message_id",
    ),
    (
        "a bidi override in an id",
        _with(_set("customer.customer_id", "cust-\u202e1234")),
        "control_character",
        "customer.customer_id",
    ),
    (
        "a zero-width space in an id",
        _with(_set("customer.customer_id", "cust-12\u200b34")),
        "control_character",
        "customer.customer_id",
    ),
    (
        "lone surrogate",
        encode(valid("bad")).replace("卡纸".encode(), b"\\ud83d"),
        "invalid_unicode",
        "subject",
    ),
    (
        "whole message too large",
        _with(_set("customer.customer_id", "x" * (300 * 1024))),
        "message_too_large",
        "",
    ),
    ("missing channel", _with(_drop("channel")), "missing_field", "channel"),
    ("missing subject", _with(_drop("subject")), "missing_field", "subject"),
    ("missing customer name", _with(_drop("customer.name")), "missing_field", "customer.name"),
    ("missing received_at", _with(_drop("received_at")), "missing_field", "received_at"),
    ("unknown channel", _with(_set("channel", "fax")), "unknown_channel", "channel"),
    ("channel of wrong type", _with(_set("channel", 7)), "unknown_channel", "channel"),
    ("subject of wrong type", _with(_set("subject", ["a"])), "wrong_type", "subject"),
    ("customer of wrong type", _with(_set("customer", "王芳")), "wrong_type", "customer"),
    (
        "attachment size as text",
        _with(_set("attachments", [{**ATTACHMENT, "size": "1kb"}])),
        "wrong_type",
        "attachments[0].size",
    ),
    ("blank subject", _with(_set("subject", "   ")), "blank_field", "subject"),
    (
        "subject over 300 characters",
        _with(_set("subject", "字" * 301)),
        "subject_too_long",
        "subject",
    ),
    (
        "description over 32 KiB",
        _with(_set("description", "字" * 11_000)),
        "description_too_long",
        "description",
    ),
    (
        "customer name over 200 characters",
        _with(_set("customer.name", "王" * 201)),
        "field_too_long",
        "customer.name",
    ),
    ("no contact method", _with(_drop("customer.email")), "no_contact_method", "customer"),
    (
        "invalid e-mail",
        _with(_set("customer.email", "not-an-address")),
        "invalid_email",
        "customer.email",
    ),
    *(
        (
            f"e-mail {address!r}",  # a mail library reads each as another mailbox (RCPT TO)
            _with(_set("customer.email", address)),
            "invalid_email",
            "customer.email",
        )
        for address in (
            "ceo;x@a.bc",
            "a,b@example.com",
            "a>b@example.com",
            "x<y@example.com",
            "a:b@x.com",
            'a"b"@x.com',
            "a(b)@x.com",
            "a..b@x.com",
            "wang.fang@exa>mple.com",
        )
    ),
    ("invalid phone", _with(_set("customer.phone", "call me")), "invalid_phone", "customer.phone"),
    *(
        (
            f"phone {number!r}",
            _with(_set("customer.phone", number)),
            "invalid_phone",
            "customer.phone",
        )
        for number in (
            "+00 0000 0000",
            "+0861380000000",
            "000000",
            "+9999999999999999",
            "+12345",
            "١٢٣٤٥٦٧٨",
        )
    ),
    (
        "invalid language",
        _with(_set("customer.language", "chinese!")),
        "invalid_language",
        "customer.language",
    ),
    (
        "received_at without zone",
        _with(_set("received_at", "2026-11-20T09:30:00")),
        "invalid_received_at",
        "received_at",
    ),
    (
        "received_at not a time",
        _with(_set("received_at", "yesterday")),
        "invalid_received_at",
        "received_at",
    ),
    (
        "received_at no clock can hold (year 1, +14:00)",
        _with(_set("received_at", "0001-01-01T00:00:00+14:00")),
        "invalid_received_at",
        "received_at",
    ),
    (
        "received_at no clock can hold (year 9999, -14:00)",
        _with(_set("received_at", "9999-12-31T23:59:59-14:00")),
        "invalid_received_at",
        "received_at",
    ),
    (
        "received_at in the year 2000",
        _with(_set("received_at", "2000-01-01T09:00:00+08:00"), "bad-2000"),
        "received_at_out_of_range",
        "received_at",
    ),
    (
        "received_at in the year 2100",
        _with(_set("received_at", "2100-01-01T09:00:00+08:00"), "bad-2100"),
        "received_at_out_of_range",
        "received_at",
    ),
    ("unknown priority", _with(_set("priority", "asap")), "invalid_priority", "priority"),
    ("unknown field", _with(_set("sender_ip", "10.0.0.1")), "unknown_field", "sender_ip"),
    (
        "attachment with bytes",
        _with(_set("attachments", [{**ATTACHMENT, "content": "AAAA"}])),
        "attachment_bytes_not_allowed",
        "attachments[0]",
    ),
    (
        "too many attachments",
        _with(_set("attachments", [ATTACHMENT] * 21)),
        "too_many_attachments",
        "attachments",
    ),
    (
        "attachment without url scheme",
        _with(_set("attachments", [{**ATTACHMENT, "url": "x"}])),
        "invalid_attachment",
        "attachments[0].url",
    ),
    (
        "malformed reply number",
        _with(_set("reply_to_ticket", "ticket 42")),
        "invalid_ticket_number",
        "reply_to_ticket",
    ),
    (
        "reply to an unknown ticket",
        _with(_set("reply_to_ticket", "REQ-2026-999999")),
        "unknown_reply_ticket",
        "reply_to_ticket",
    ),
]

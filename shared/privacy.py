"""Contact data out of everything but the records themselves: logs, dead-letter errors,
rejection details.

A customer's e-mail address or phone number belongs in the event that carries it and nowhere
else. It leaks through error texts — pydantic quotes the refused value, an exception quotes its
argument — so whatever writes such text for operators passes it through :func:`scrub`: enough
is left to recognise an address (``w***@example.com``, ``+86***34``), not to use it.
"""

from __future__ import annotations

import re
from typing import Any

from shared.text import tidy_line

_EMAIL = re.compile(
    r"(?<![\w.!#$%&*+/=?^`{|}~-])[\w!#$%&*+/=?^`{|}~-][\w.!#$%&'*+/=?^`{|}~-]*@[\w-]+(?:\.[\w-]+)+"
)
"""Any address intake takes (a dot-atom: ``o'brien@…`` too), but never from a quote that
encloses it (``'c1@example.com'`` as pydantic quotes a value)."""
# An international number (+ and 7-15 digits) or a bare run of 9-15 digits, single spaces or
# dashes allowed between digits; never part of a word, a path, a time or an id, never a date.
_PHONE = re.compile(
    r"(?<![\w/.:+-])(?!\d{4}-\d{2}-\d{2}(?!\d))"
    r"(?:\+\d(?:[ -]?\d){6,14}|\d(?:[ -]?\d){8,14})"
    r"(?![\w/:-]|\.\d)"
)


def mask_email(address: str) -> str:
    """``wang.fang@example.com`` -> ``w***@example.com``."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(number: str) -> str:
    """``+8613800001234`` -> ``+86***34``."""
    return f"{number[:3]}***{number[-2:]}"


def scrub(text: str) -> str:
    """``text`` with every e-mail address and phone number in it masked."""
    if "@" in text:
        text = _EMAIL.sub(lambda m: mask_email(m[0]), text)
    return _PHONE.sub(lambda m: mask_phone(m[0]), text)


def outside_error(text: str, limit: int = 500) -> str:
    """An error text made of what someone outside said (a receiver's answer, a relay's reply,
    an exception quoting either) as a column, an event or a log line may hold it: one line, no
    NUL or other control character (PostgreSQL's ``text`` refuses NUL: one such answer made a
    whole group commit of notices fail, and go again), no lone surrogate (aiosmtplib decodes a
    reply's stray bytes into them, and nothing encodes them back), contact data masked, at most
    ``limit`` characters."""
    text = text[: limit * 2].encode("utf-8", "replace").decode("utf-8")
    return scrub(tidy_line(text))[:limit]


def scrub_value(value: Any) -> Any:
    """:func:`scrub` applied to every string inside ``value`` (dicts, lists and tuples too)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_value(v) for v in value)
    return value

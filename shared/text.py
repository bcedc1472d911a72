"""Text from outside made safe to show: no control characters.

A customer's subject or an agent's note ends up on an agent's terminal (``desk ticket show``),
in a browser, in a mail header and in log lines. A control character there is never the
writer's meaning — ESC starts a terminal escape sequence that can recolour or rewrite the
screen, BEL rings, a carriage return overwrites the line before it — so text is kept with each
one replaced by U+FFFD (visibly: what was there is not hidden, and the request is not refused
over a stray byte). Free text keeps its line breaks and tabs; a one-line field (a subject, a
name) turns them into a space.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
"""C0 (but tab, line feed, carriage return), DEL and C1 controls."""
_BREAK = re.compile("[\t\n\r\x0b\x0c\x85\u2028\u2029]+")
"""What breaks a line (or a column): in a one-line field, one space."""
_ANY_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\x85\u2028\u2029]")


def has_control(text: str) -> bool:
    """Whether ``text`` holds any control character or line break: an id made by a program
    holds none, and changing one would make it another id (so it is refused, not tidied)."""
    return _ANY_CONTROL.search(text) is not None


def tidy_text(text: str) -> str:
    """Free text (a description, a reply) with its control characters replaced; line breaks
    and tabs kept."""
    return _CONTROL.sub(REPLACEMENT, text) if _CONTROL.search(text) else text


def tidy_line(text: str) -> str:
    """A one-line field: line breaks and tabs as one space, other control characters
    replaced."""
    if _BREAK.search(text):
        text = _BREAK.sub(" ", text)
    return tidy_text(text)

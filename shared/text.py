"""Text from outside made safe to show: no control characters.

A customer's subject or an agent's note ends up on an agent's terminal (``desk ticket show``),
in a browser, in a mail header and in log lines. A control character there is never the
writer's meaning — ESC starts a terminal escape sequence that can recolour or rewrite the
screen, BEL rings, a carriage return overwrites the line before it — so text is kept with each
one replaced by U+FFFD (visibly: what was there is not hidden, and the request is not refused
over a stray byte). Free text keeps its line breaks and tabs; a one-line field (a subject, a
name) turns them into a space.

Bidirectional formatting characters get the same care (the "Trojan Source" trick). An override
(U+202D, U+202E) shows characters in an order other than the one they are in — a subject or a
name that reads as something it is not — so it is replaced like a control character. Embeddings
and isolates are how mixed Arabic, Hebrew and Latin text is written, so they stay when closed
on their line; one left open is replaced: it reordered what a terminal or a mail client shows
after the field (the next column of ``desk ticket show``, a log line's ticket number).
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"

_BREAK = re.compile("[\t\n\r\x0b\x0c\x85\u2028\u2029]+")
"""What breaks a line (or a column): in a one-line field, one space."""
_ANY_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\x85\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\u061c\u180e\u200b-\u200f\u2060-\u2064\ufeff]"
)
"""What no id holds: controls, line breaks, bidi formatting, and the invisible formatting
characters (zero-width space and joiners, LRM/RLM/ALM, word joiner, BOM) — shown, an id with
one looks like the id without it."""
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202d\u202e]")
"""What :func:`tidy_text` replaces: C0 controls (but tab, line feed, carriage return), DEL, C1
controls, and the two bidi overrides."""
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_SPECIAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""Either of the two above: most text holds none, and one scan of it says so."""
_OPENS_EMBEDDING = "\u202a\u202b"  # LRE, RLE (closed by PDF, U+202C)
_OPENS_ISOLATE = "\u2066\u2067\u2068"  # LRI, RLI, FSI (closed by PDI, U+2069)
_PDF, _PDI = "\u202c", "\u2069"
_LINE = re.compile("(\r\n|[\n\r\x0b\x0c\x85\u2028\u2029])")


def has_control(text: str) -> bool:
    """Whether ``text`` holds any control character, line break, bidi or invisible formatting
    character: an id made by a program holds none, and changing one would make it another id
    (so it is refused, not tidied)."""
    return _ANY_CONTROL.search(text) is not None


def tidy_text(text: str) -> str:
    """Free text (a description, a reply) with its control characters and bidi overrides
    replaced, and the embeddings and isolates a line leaves open replaced; line breaks and tabs
    kept."""
    if not _SPECIAL.search(text):
        return text
    text = _UNSAFE.sub(REPLACEMENT, text)
    if _BIDI.search(text):
        parts = _LINE.split(text)  # lines at even places, their breaks between
        text = "".join(p if i % 2 else _open_ones_replaced(p) for i, p in enumerate(parts))
    return text


def _open_ones_replaced(line: str) -> str:
    """``line`` with every embedding and isolate it leaves open replaced (UAX #9's pairing,
    simplified: a PDI closes the innermost isolate and what opened inside it; a PDF the
    innermost embedding, unless an isolate opened after it). Replaced, not closed with an added
    PDF or PDI: the text keeps its length, so a field cut to its limit stays within it. Linear:
    each opener is pushed and popped once."""
    still_open: list[tuple[int, bool]] = []  # (where, is an isolate), innermost last
    isolates = 0
    for found in _BIDI.finditer(line):
        char = found.group()
        if char in _OPENS_EMBEDDING or char in _OPENS_ISOLATE:
            isolate = char in _OPENS_ISOLATE
            still_open.append((found.start(), isolate))
            isolates += isolate
        elif char == _PDF and still_open and not still_open[-1][1]:
            still_open.pop()
        elif char == _PDI and isolates:
            while not still_open.pop()[1]:
                pass
            isolates -= 1
    if not still_open:
        return line
    chars = list(line)
    for where, _ in still_open:
        chars[where] = REPLACEMENT
    return "".join(chars)


def tidy_line(text: str) -> str:
    """A one-line field: line breaks and tabs as one space, other control characters
    replaced."""
    if _BREAK.search(text):
        text = _BREAK.sub(" ", text)
    return tidy_text(text)

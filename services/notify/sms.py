"""A text message's length, in what a provider bills: segments.

A message in the GSM 03.38 alphabet takes 160 characters in one segment, 153 a segment when
concatenated (two-unit extension characters such as ``€`` count twice); any other character
switches the whole message to UCS-2: 70 units in one, 67 a segment concatenated, and a
character outside the Basic Multilingual Plane (an emoji) takes two units. An acknowledgement
carrying a 300-character Chinese subject would otherwise be billed as seven messages.
"""

from __future__ import annotations

_GSM = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€\f")


def _gsm_units(text: str) -> int | None:
    """Units in the GSM alphabet, or None if the text needs UCS-2."""
    units = 0
    for char in text:
        if char in _GSM:
            units += 1
        elif char in _GSM_EXTENDED:
            units += 2
        else:
            return None
    return units


def _ucs2_units(text: str) -> int:
    return sum(2 if ord(char) > 0xFFFF else 1 for char in text)


def segments(text: str) -> int:
    """Segments ``text`` is sent (and billed) as."""
    gsm = _gsm_units(text)
    units, single, each = (gsm, 160, 153) if gsm is not None else (_ucs2_units(text), 70, 67)
    return 1 if units <= single else -(-units // each)


def shortened(text: str, most: int) -> str:
    """``text`` cut (with an ellipsis) to fit in ``most`` segments; as it is if it fits."""
    if segments(text) <= most:
        return text
    gsm = _gsm_units(text) is not None
    ellipsis = "..." if gsm else "…"
    kept = text
    # Drop characters from the end until the cut text and its ellipsis fit: a few passes, as
    # each character is worth one or two units.
    budget = most * (153 if gsm else 67)
    units = _gsm_units if gsm else _ucs2_units
    while kept and (units(kept + ellipsis) or 0) > budget:
        over = (units(kept + ellipsis) or 0) - budget
        kept = kept[: len(kept) - max(1, over // 2)]
    return kept.rstrip() + ellipsis

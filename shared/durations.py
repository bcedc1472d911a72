"""Durations written the way operators write them: "45s", "30m", "4h", "1h30m", "2d", "PT30M".

Every duration in settings and in the policy file goes through :data:`Duration`, so a deployment
never has to remember whether a field counts seconds or minutes.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_ISO = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)


def parse_duration(value: Any) -> timedelta:
    """Read a duration from text ("1h30m", "PT90M"), a number of seconds, or a timedelta."""
    try:
        return _parse(value)
    except OverflowError:
        raise ValueError(f"duration {value!r} is longer than any clock can count") from None


def _parse(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is not a boolean")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '30m', got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError("empty duration")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return timedelta(seconds=float(text))
    iso = _ISO.match(text)
    if iso and any(iso.groupdict().values()):
        fields = {k: float(v) for k, v in iso.groupdict().items() if v}
        return timedelta(
            days=fields.get("d", 0),
            hours=fields.get("h", 0),
            minutes=fields.get("m", 0),
            seconds=fields.get("s", 0),
        )
    compact = text.replace(" ", "")
    parts: list[tuple[str, str]] = _PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts).lower() != compact.lower():
        raise ValueError(
            f"cannot read duration {value!r}: "
            "use a number with a unit, e.g. 45s, 30m, 4h, 1h30m, 2d"
        )
    return sum((float(n) * _UNITS[u.lower()] for n, u in parts), timedelta())


def format_duration(value: timedelta) -> str:
    """Write a duration back in the compact form, largest units first ("1h30m", "250ms")."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    sign = "-" if total_ms < 0 else ""
    total_ms = abs(total_ms)
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, total_ms = divmod(total_ms, size)
        if count:
            out.append(f"{count}{unit}")
    if total_ms:
        out.append(f"{total_ms}ms")
    return sign + "".join(out)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A pydantic field type: accepts "45s", "30m", "4h", ISO 8601 or seconds; serialises as "1h30m"."""

PositiveDuration = Annotated[Duration, Field(gt=timedelta(0))]
"""A :data:`Duration` that must be longer than nothing: what a setting's interval, timeout or
backoff is. Zero made notify's delivery worker divide by it at every start (and so never send),
and an interval of zero is a busy loop."""

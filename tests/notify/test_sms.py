"""Text messages in segments, as providers bill them; a long one is cut to the limit."""

from __future__ import annotations

import pytest

from services.notify.sms import segments, shortened

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),  # concatenated: 153 a segment
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # an extension character takes two units
        ("€" * 81, 2),
        ("字" * 70, 1),  # UCS-2
        ("字" * 71, 2),
        ("a" * 100 + "字", 2),  # one character outside the alphabet switches the whole text
        ("😀" * 35, 1),  # two units each
        ("😀" * 36, 2),
    ],
)
def test_segments_count_as_providers_bill(text: str, expected: int) -> None:
    assert segments(text) == expected


@pytest.mark.parametrize(
    "text",
    ["Hello " * 200, "您好，您的服务请求已受理。" * 40, "😀" * 200, "€" * 1000, "a😀" * 300],
)
@pytest.mark.parametrize("most", [1, 2, 3])
def test_a_long_text_is_cut_to_the_limit_with_an_ellipsis(text: str, most: int) -> None:
    cut = shortened(text, most)
    assert segments(cut) <= most
    assert cut.endswith(("...", "…"))
    assert text.startswith(cut.rstrip(".…").rstrip())
    assert segments(cut) == most or segments(cut + "x" * 3) > most  # not cut further than needed


def test_a_text_that_fits_is_sent_as_it_is() -> None:
    assert shortened("REQ-2026-000001 received.", 1) == "REQ-2026-000001 received."

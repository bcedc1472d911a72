"""Control characters in text from outside: replaced visibly, line breaks kept where they mean
something."""

from __future__ import annotations

import pytest

from shared.text import REPLACEMENT, tidy_line, tidy_text


@pytest.mark.parametrize("control", ["\x1b", "\x07", "\x08", "\x7f", "\x9b", "\x00", "\x0c"])
def test_control_characters_are_replaced_visibly_in_free_text(control: str) -> None:
    assert tidy_text(f"printer{control}[2J broken") == f"printer{REPLACEMENT}[2J broken"


def test_free_text_keeps_its_line_breaks_and_tabs() -> None:
    text = "Dear team,\r\n\tthe printer\nis broken."
    assert tidy_text(text) == text


def test_a_one_line_field_turns_line_breaks_into_one_space() -> None:
    assert tidy_line("Printer\r\nbroken\tagain\u2028today") == "Printer broken again today"
    assert tidy_line("bell\x07 and\x1b[31m red") == f"bell{REPLACEMENT} and{REPLACEMENT}[31m red"


def test_text_without_controls_is_returned_as_it_is() -> None:
    text = "打印机坏了 — ça ne marche pas"
    assert tidy_text(text) is text
    assert tidy_line(text) is text

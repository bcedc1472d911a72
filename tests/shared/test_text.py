"""Control characters in text from outside: replaced visibly, line breaks kept where they mean
something."""

from __future__ import annotations

import time

import pytest

from shared.text import REPLACEMENT, has_control, tidy_line, tidy_text


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


RLO, LRE, PDF, RLI, PDI = "\u202e", "\u202a", "\u202c", "\u2067", "\u2069"


def test_a_bidi_override_is_replaced_visibly() -> None:
    """An override shows a name or a subject in an order other than its characters' ("invoice
    RLO fdp.exe" reads as "invoice exe.pdf"): replaced, like a control character."""
    assert tidy_line(f"invoice {RLO}fdp.exe") == f"invoice {REPLACEMENT}fdp.exe"
    assert tidy_text(f"see {RLO}this{PDF}") == f"see {REPLACEMENT}this{PDF}"


def test_embeddings_and_isolates_left_open_on_their_line_are_replaced() -> None:
    """Mixed-direction text keeps its embeddings and isolates; one still open at its line's end
    would reorder what is shown after the field, so it is replaced — not closed by an added
    character: a field cut to its limit must stay within it."""
    assert tidy_line(f"name {RLI}شركة") == f"name {REPLACEMENT}شركة"
    assert tidy_line(f"{LRE}a{RLI}b") == f"{REPLACEMENT}a{REPLACEMENT}b"
    assert tidy_text(f"{RLI}one\nline two {LRE}x") == f"{REPLACEMENT}one\nline two {REPLACEMENT}x"
    assert tidy_line(f"{LRE}a{RLI}b{PDF}") == f"{REPLACEMENT}a{REPLACEMENT}b{PDF}"  # no PDF across
    subject = f"{RLI}{'x' * 299}"
    assert len(tidy_line(subject)) == len(subject)


def test_tidying_takes_time_in_proportion_to_the_text() -> None:
    """Forty thousand openers and as many stray closers (a record's worth): pairing them must
    not compare each closer with every opener."""
    hostile = LRE * 40_000 + PDI * 40_000 + RLI * 40_000 + PDF * 40_000
    began = time.process_time()
    tidied = tidy_text(hostile)
    took = time.process_time() - began
    # Linear: about 0.1 s here; pairing by scanning the open ones took tens of seconds.
    assert took < 3, f"tidying took {took:.1f} s of CPU"
    assert tidied.count(REPLACEMENT) == 80_000
    assert len(tidied) == len(hostile)


def test_balanced_embeddings_and_isolates_are_kept_as_they_are() -> None:
    text = f"order {RLI}طلب{PDI} and {LRE}abc{PDF}, a stray {PDF}{PDI} closes nothing"
    assert tidy_text(text) == text
    assert tidy_line(f"{RLI}{LRE}x{PDI}") == f"{RLI}{LRE}x{PDI}"  # the PDI closed both


def test_an_id_with_a_bidi_formatting_character_is_not_an_id() -> None:
    """Ids are refused, not tidied: one shown reversed would pass for another."""
    assert has_control(f"cust-{RLO}1234")
    assert has_control(f"cust-{RLI}1234")
    assert not has_control("cust-1234")


@pytest.mark.parametrize(
    "invisible", ["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u061c", "\u2060", "\ufeff"]
)
def test_an_id_with_an_invisible_formatting_character_is_not_an_id(invisible: str) -> None:
    """Zero-width characters and the directional marks show as nothing: ``cust-1234`` with one
    looks like ``cust-1234`` and is another customer."""
    assert has_control(f"cust-12{invisible}34")
    assert not has_control("cust-1234 and عميل")

"""Triage review: hits, corrections and the words of corrected tickets, per rule (pure)."""

from __future__ import annotations

import pytest

from services.intake.review import Triaged, review, words_of

pytestmark = pytest.mark.unit


def test_corrections_count_against_the_rule_that_decided() -> None:
    tickets = [
        Triaged("t1", "questions", "Could you check the printer? Prints look faded"),
        Triaged("t2", "questions", "Where is my invoice?"),
        Triaged("t3", "questions", "打印机出来的字很淡，能看一下吗？"),
        Triaged("t4", "fault-words", "The screen flickers"),
    ]
    rules = review(tickets, {"t1": "general fault", "t3": "general fault"})
    assert [(r.rule, r.hits, r.corrected) for r in rules] == [
        ("questions", 3, 2),
        ("fault-words", 1, 0),
    ]
    questions = rules[0]
    assert questions.correction_rate == pytest.approx(2 / 3)
    assert questions.corrected_to == {"general fault": 2}
    assert ("faded", 1) in questions.frequent(20)
    assert ("打印", 1) in questions.frequent(20)
    assert "invoice" not in dict(questions.frequent(20)), "uncorrected tickets are not counted"


def test_words_leave_out_the_common_ones() -> None:
    assert words_of("Could you please check the printer? 我们的打印机") == {
        "check",
        "printer",
        "打印",
        "印机",
    }

"""Triage's words: stems, contractions, phrases in sequence, Chinese, questions, synonyms."""

from __future__ import annotations

import pytest

from services.policy.words import KeywordIndex, Words, latin_words, stem

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("forms", "same"),
    [
        (["jam", "jams", "jammed", "jamming"], True),
        (["crash", "crashes", "crashed", "crashing"], True),
        (["update", "updates", "updated", "updating"], True),
        (["battery", "batteries"], True),
        (["log", "logged", "logging"], True),
        (["error", "errand"], False),
        (["printer", "printing"], False),
    ],
)
def test_forms_of_a_word_share_one_stem(forms: list[str], same: bool) -> None:
    assert (len({stem(f) for f in forms}) == 1) is same


def test_contractions_are_spelled_out() -> None:
    spelled = ["cannot", "will", "not", "doe", "not", "user"]
    assert latin_words("can't won't doesn't user's") == spelled


def find(keywords: list[str], text: str) -> set[str]:
    return KeywordIndex(keywords).find(Words.of(text))


def test_phrases_match_their_words_in_sequence() -> None:
    assert find(["not working", "blue screen"], "It is NOT working, a Blue Screen!") == {
        "not working",
        "blue screen",
    }
    assert find(["not working"], "working fine, not a problem") == set()
    assert find(["does not work"], "it doesn't work") == {"does not work"}


def test_chinese_keywords_are_found_without_spaces_and_latin_words_inside_chinese() -> None:
    assert find(["打不开", "erp"], "今天ERP打不开了") == {"打不开", "erp"}
    assert find(["打不开"], "打开了") == set()


def test_a_question_mark_is_a_word_in_either_width() -> None:
    assert find(["?"], "能修吗？") == {"?"}
    assert find(["?"], "Is it covered?") == {"?"}
    assert find(["?"], "It is broken.") == set()


def test_spellings_of_one_keyword_count_once() -> None:
    assert find(["email|mail|邮件", "erp"], "mail and 邮件 and email") == {"email|mail|邮件"}

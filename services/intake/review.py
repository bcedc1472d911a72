"""Triage review: how each rule fared against agents' corrections. Pure.

Agents correct triage with ``reclassify`` (dispatch records ``ticket.reclassified``). For each
rule: how many tickets it decided, how many of those were corrected and to what, and the words
that come up most in the corrected ones — the evidence an operator changes a rule on
(``desk triage review``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.policy.words import Words

_ENGLISH = re.compile(r"[a-z][a-z'-]{2,}")
_ENGLISH_STOP = """the and for with this that since from have has had was were are our you your
not but can can't cannot all any get got its it's they them there their when what which who how
will would could should please thanks thank hello dear also just been being into onto out about
after before again still even very some more most only than then too yet one two"""
_CHINESE_STOP = """一下 我们 你们 他们 一个 时候 以后 现在 今天 已经 还是
没有 可以 谢谢 麻烦 请问 一直 这个 那个 怎么"""
STOP_WORDS = frozenset(_ENGLISH_STOP.split() + _CHINESE_STOP.split())
"""Words too common to say anything about a request."""
PARTICLES = frozenset("的了是在和都也就我你他她们吗呢吧啊")
"""Characters that end or start no word worth counting (a two-character window across one
says nothing)."""


@dataclass
class RuleReview:
    rule: str
    hits: int = 0
    corrected: int = 0
    corrected_to: Counter[str] = field(default_factory=Counter)
    words: Counter[str] = field(default_factory=Counter)

    @property
    def correction_rate(self) -> float:
        return self.corrected / self.hits if self.hits else 0.0

    def frequent(self, n: int = 8) -> list[tuple[str, int]]:
        """The most frequent words of the corrected tickets (each counted once per ticket)."""
        return self.words.most_common(n)


@dataclass(frozen=True)
class Triaged:
    """A ticket as triage saw it: the rule that decided, and its text."""

    ticket_id: str
    rule: str
    text: str


def review(tickets: Iterable[Triaged], corrections: Mapping[str, str]) -> list[RuleReview]:
    """Per rule, most corrected first; ``corrections``: ticket id -> what it was corrected to."""
    rules: dict[str, RuleReview] = {}
    for ticket in tickets:
        found = rules.setdefault(ticket.rule, RuleReview(ticket.rule))
        found.hits += 1
        corrected = corrections.get(ticket.ticket_id)
        if corrected is None:
            continue
        found.corrected += 1
        found.corrected_to[corrected] += 1
        found.words.update(words_of(ticket.text))
    return sorted(rules.values(), key=lambda r: (-r.correction_rate, -r.hits, r.rule))


def words_of(text: str) -> set[str]:
    """A request's words as people read them: English words and two-character Chinese ones."""
    lowered = text.lower()
    english = {w.strip("'-") for w in _ENGLISH.findall(lowered)}
    chinese = {w for w in Words.of(lowered).chinese() if not PARTICLES & set(w)}
    return {w for w in english | chinese if w and w not in STOP_WORDS}

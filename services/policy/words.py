"""The words of a request, as triage rules match them: words, not phrases.

Customers say the same thing in many ways ("the printer won't print", "printing fails", "打印机
打不出来"), so rules name *words* and combine them, and the text is reduced to words the same
way the rules' keywords are:

- English (and any Latin-script word inside Chinese text, like "ERP" or "VPN"): lower-cased
  words, contractions spelled out (``can't`` → ``cannot``, ``doesn't`` → ``does not``) and a
  light stemmer, so ``jams``, ``jammed`` and ``jamming`` are one word. A keyword of several words
  matches them in sequence.
- Chinese, written without spaces: a keyword is a run of characters found anywhere in the text —
  what matching against the text's character n-grams finds, without building them (a 32 KiB
  description would make a hundred thousand). Keywords are short words (两个字), combined by
  rules, not long phrases. No segmenter to install or load; a review counts two-character
  n-grams (:meth:`Words.chinese`).
- ``?`` (or the full-width ``？``) is a word of its own: a request that asks something.

Pure; no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LATIN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_CONTRACTIONS = {"can't": "cannot", "won't": "will not", "shan't": "shall not", "ain't": "is not"}
_KEEP = ("ss", "us", "is")
_DOUBLE_KEPT = frozenset("lsz")
QUESTION = "?"


_STEMS: dict[str, str] = {}


def stem(word: str) -> str:
    """A crude English stem, applied alike to the text and to the keywords (remembered: the
    same words come again and again)."""
    found = _STEMS.get(word)
    if found is None:
        found = _stem(word)
        if len(_STEMS) < 65_536:
            _STEMS[word] = found
    return found


def _stem(word: str) -> str:
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("sses", "shes", "ches", "xes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(_KEEP):
        word = word[:-1]
    for ending in ("ing", "ed"):
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            word = word[: -len(ending)]
            if len(word) > 2 and word[-1] == word[-2] and word[-1] not in _DOUBLE_KEPT:
                word = word[:-1]  # jamm -> jam, stopp -> stop
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]  # update / updated -> updat
    return word


def latin_words(text: str) -> list[str]:
    """Stemmed words of lower-cased ``text``, contractions spelled out."""
    found: list[str] = []
    stems = _STEMS
    for token in _LATIN.findall(text):
        if "'" not in token:
            found.append(stems.get(token) or stem(token))
        elif token in _CONTRACTIONS:
            found += _CONTRACTIONS[token].split()
        elif token.endswith("n't"):
            found += [stem(token[:-3]), "not"]
        else:
            found.append(stem(token.split("'")[0]))  # user's -> user
    return found


@dataclass(slots=True)
class Words:
    """A request's text reduced to what keywords are matched against."""

    text: str
    sequence: tuple[str, ...]
    latin: frozenset[str]
    characters: frozenset[str]

    @classmethod
    def of(cls, text: str) -> Words:
        lowered = text.lower()
        sequence = latin_words(lowered)
        if "?" in lowered or "？" in lowered:
            sequence.append(QUESTION)
        return cls(lowered, tuple(sequence), frozenset(sequence), frozenset(lowered))

    def chinese(self) -> set[str]:
        """The two-character n-grams of the Chinese text (what a review counts as words)."""
        return {run[i : i + 2] for run in _CJK.findall(self.text) for i in range(len(run) - 1)}


@dataclass(frozen=True, slots=True)
class Keyword:
    """One spelling of a keyword as it is matched: English words, or a Chinese string."""

    source: str
    """The keyword as the policy writes it (``email|mail|邮件``: any of these spellings)."""
    words: tuple[str, ...]
    cjk: str

    @classmethod
    def spellings(cls, source: str) -> list[Keyword]:
        found = []
        for spelling in source.split("|"):
            text = spelling.strip().lower()
            if text in (QUESTION, "？"):
                found.append(cls(source, (QUESTION,), ""))
            elif _CJK.fullmatch(text):
                found.append(cls(source, (), text))
            else:
                found.append(cls(source, tuple(latin_words(text)) or (text,), ""))
        return found

    def found_in(self, words: Words) -> bool:
        if self.cjk:
            return self.cjk in words.text
        if len(self.words) == 1:
            return self.words[0] in words.latin
        if not all(w in words.latin for w in self.words):
            return False
        first, size, sequence = self.words[0], len(self.words), words.sequence
        return any(
            sequence[i : i + size] == self.words for i, word in enumerate(sequence) if word == first
        )


class KeywordIndex:
    """A list of keywords ready to be looked for (triage looks for hundreds in every request):
    single English words by one set intersection, English phrases only when their first word
    occurs, Chinese keywords by a substring search — only those whose first character occurs
    (an alternation regex of them all is eight times slower)."""

    def __init__(self, sources: list[str]) -> None:
        self.words: dict[str, set[str]] = {}
        self.phrases: dict[str, list[Keyword]] = {}
        self.cjk: dict[str, list[tuple[str, str]]] = {}
        for source in sources:
            for keyword in Keyword.spellings(source):
                if keyword.cjk:
                    self.cjk.setdefault(keyword.cjk[0], []).append((keyword.cjk, source))
                elif len(keyword.words) == 1:
                    self.words.setdefault(keyword.words[0], set()).add(source)
                else:
                    self.phrases.setdefault(keyword.words[0], []).append(keyword)

    def find(self, words: Words) -> set[str]:
        found: set[str] = set()
        for hit in self.words.keys() & words.latin:
            found |= self.words[hit]
        for first in self.phrases.keys() & words.latin:
            found.update(k.source for k in self.phrases[first] if k.found_in(words))
        text = words.text
        for first in self.cjk.keys() & words.characters:
            found.update(source for cjk, source in self.cjk[first] if cjk in text)
        return found

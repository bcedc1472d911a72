"""Policy sections of intake: how requests are numbered and triaged, and the triage itself.

:func:`judge` applies the ``triage`` section to a request (pure): complaints are recognised
first and form their own category, ordinary or major; then the ordered rules, first match wins.
Rules look at the request's attributes and at its *words* (:mod:`services.policy.words`): any
of a list, a word of each of several groups (``all_of``: a scope and a failure), several
different ones of a list (``several``: systems named together), none of a list (``none_of``).
The judgement names the rule that decided and what it matched. intake triages every request
with it; ``desk policy check --triage-cases`` scores it on a labelled set.
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import dataclass
from functools import cached_property
from zoneinfo import ZoneInfo, available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.policy.words import KeywordIndex, Words
from services.vocabulary import (
    CATEGORY_OF,
    Category,
    Channel,
    ComplaintSeverity,
    Complexity,
    Priority,
)

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumberingPolicy(_Section):
    """Request numbers look like ``REQ-2026-000123``: prefix, year, a counter per year."""

    prefix: str = Field(default="REQ", pattern=r"^[A-Z]{2,8}$")
    digits: int = Field(default=6, ge=4, le=12)
    time_zone: str = Field(default="Asia/Shanghai", description="Whose new year starts a year.")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value not in available_timezones():
            raise ValueError(f"unknown time zone {value!r}")
        return value

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


Phrases = dict[str, list[str]]
"""Keywords per language (``en``, ``zh``, ...); ``any`` applies to every language."""


class Keywords(_Section):
    """Words looked for in subject and description, per language (:mod:`services.policy.words`:
    English words are stemmed, so ``jam`` finds "jammed" and "jamming"; a keyword of several
    words finds them in sequence; Chinese keywords are found as character n-grams; ``"?"`` is a
    question)."""

    phrases: Phrases = {}

    @model_validator(mode="before")
    @classmethod
    def _bare_mapping(cls, value: object) -> object:
        return {"phrases": value} if isinstance(value, dict) and "phrases" not in value else value

    @field_validator("phrases")
    @classmethod
    def _lower(cls, value: Phrases) -> Phrases:
        for language, phrases in value.items():
            if not phrases or any(not p.strip() for p in phrases):
                raise ValueError(f"{language}: phrases must be non-empty")
            mixed = [
                p
                for p in phrases
                for spelling in p.split("|")
                if _CJK.search(spelling) and not _CJK.fullmatch(spelling.strip())
            ]
            if mixed:
                raise ValueError(f"{language}: {mixed}: a keyword is Chinese or not, not both")
        return {k.lower(): [p.strip().lower() for p in v] for k, v in value.items()}

    def find(self, language: str, hits: Set[str]) -> list[str]:
        """Those of the keywords of ``language`` (and ``any``) among ``hits``: the keywords
        found in the request (:meth:`TriagePolicy.hits`, one pass over its words)."""
        found = self.of(language) & hits
        return sorted(found) if found else []

    def of(self, language: str) -> frozenset[str]:
        """The keywords of ``language`` and those of ``any``."""
        mine = self._of.get(language)
        if mine is None:
            mine = self._of[language] = frozenset(
                [*self.phrases.get(language, ()), *self.phrases.get("any", ())]
            )
        return mine

    @cached_property
    def _of(self) -> dict[str, frozenset[str]]:
        """Per language, its keywords and those of ``any`` (filled as languages are asked)."""
        return {}

    def __bool__(self) -> bool:
        return bool(self.phrases)


class Several(_Section):
    """At least ``count`` different keywords of ``of``: several systems named at once."""

    count: int = Field(ge=2)
    of: Keywords


class TriageCondition(_Section):
    """Every listed condition must hold; within a list, any value matches."""

    channels: list[Channel] = []
    product_lines: list[str] = []
    problem_types: list[str] = []
    priorities: list[Priority] = []
    customer_tiers: list[str] = []
    languages: list[str] = []
    keywords: Keywords = Keywords()
    all_of: list[Keywords] = Field(
        default=[], description="Each group must match a word: e.g. a scope and a failure."
    )
    several: Several | None = None
    none_of: Keywords = Field(
        default=Keywords(), description="The rule does not apply if any of these words occur."
    )

    @cached_property
    def checks(self) -> tuple[tuple[str, frozenset[str]], ...]:
        """The attribute conditions that are set: (request attribute, allowed values)."""
        pairs = (
            ("channel", self.channels),
            ("product_line", self.product_lines),
            ("problem_type", self.problem_types),
            ("priority", self.priorities),
            ("tier", self.customer_tiers),
            ("language", self.languages),
        )
        return tuple((name, frozenset(values)) for name, values in pairs if values)

    @model_validator(mode="after")
    def _not_empty(self) -> TriageCondition:
        if not any(
            (
                self.channels,
                self.product_lines,
                self.problem_types,
                self.priorities,
                self.customer_tiers,
                self.languages,
                self.keywords,
                self.all_of,
                self.several,
            )
        ):
            raise ValueError("a rule needs at least one condition")
        return self

    def evidence(
        self, facts: dict[str, str | None], language: str, hits: Set[str]
    ) -> tuple[str, ...] | None:
        """What made every condition hold, or None if one does not."""
        for name, allowed in self.checks:
            if facts[name] not in allowed:
                return None
        # Most rules fail on their words: ruled out by set look-ups before any evidence is
        # built (a request meets a dozen rules and matches one).
        for group in self._groups(language):
            if group.isdisjoint(hits):
                return None
        if self.none_of and not self.none_of.of(language).isdisjoint(hits):
            return None
        found = [f"{name}={facts[name]}" for name, _ in self.checks]
        for keywords in [self.keywords, *self.all_of] if self.keywords else self.all_of:
            found += keywords.find(language, hits)
        if self.several is not None:
            named = self.several.of.find(language, hits)
            if len(named) < self.several.count:
                return None
            found += named
        return tuple(dict.fromkeys(found))

    def _groups(self, language: str) -> tuple[frozenset[str], ...]:
        """The keyword groups of ``language`` of which the request must hold a word each."""
        groups = self._groups_of.get(language)
        if groups is None:
            lists = [self.keywords, *self.all_of] if self.keywords else list(self.all_of)
            lists += [self.several.of] if self.several is not None else []
            groups = self._groups_of[language] = tuple(k.of(language) for k in lists)
        return groups

    @cached_property
    def _groups_of(self) -> dict[str, tuple[frozenset[str], ...]]:
        return {}


class TriageRule(_Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    when: TriageCondition
    complexity: Complexity


class ComplaintPolicy(_Section):
    """How complaints are recognised and how serious they are."""

    keywords: Keywords
    problem_types: list[str] = Field(
        default=["complaint"], description="A problem type that is a complaint whatever the text."
    )
    major_keywords: Keywords = Keywords()
    major_customer_tiers: list[str] = []
    major_priorities: list[Priority] = ["urgent"]
    ordinary_complexity: Complexity = "general"
    major_complexity: Complexity = "complex"


class TriagePolicy(_Section):
    """Preliminary complexity from ordered rules (first match wins), complaints apart."""

    languages: list[str] = Field(default=["zh", "en"], min_length=1)
    default_language: str = "zh"
    default_complexity: Complexity = "general"
    complaints: ComplaintPolicy
    rules: list[TriageRule]

    @model_validator(mode="after")
    def _consistent(self) -> TriagePolicy:
        if self.default_language not in self.languages:
            raise ValueError(f"default_language {self.default_language!r} is not in languages")
        names = [r.name for r in self.rules]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"rule names must be unique: {sorted(duplicates)}")
        return self

    def hits(self, language: str, words: Words) -> frozenset[str]:
        """Every keyword of the section (of ``language`` and ``any``) the request's words hold:
        one pass over them, whatever the number of rules."""
        index = self._index.get(language) or self._index.get("any")
        return frozenset(index.find(words)) if index else frozenset()

    @cached_property
    def _index(self) -> dict[str, KeywordIndex]:
        lists = [self.complaints.keywords, self.complaints.major_keywords]
        for rule in self.rules:
            when = rule.when
            lists += [when.keywords, *when.all_of, when.none_of]
            lists += [when.several.of] if when.several else []
        by_language: dict[str, set[str]] = {}
        for keywords in lists:
            for language, phrases in keywords.phrases.items():
                by_language.setdefault(language, set()).update(phrases)
        shared = by_language.get("any", set())
        return {
            language: KeywordIndex(sorted(phrases | shared))
            for language, phrases in by_language.items()
        }


@dataclass
class TriageRequest:
    """What triage looks at in a request."""

    subject: str
    description: str
    channel: str
    product_line: str | None = None
    problem_type: str | None = None
    priority: str = "normal"
    language: str | None = None
    """The customer's, when given (``zh-CN``); else it is guessed from the text."""
    tier: str | None = None


@dataclass
class Judgement:
    complexity: Complexity
    category: Category
    complaint: bool
    complaint_severity: ComplaintSeverity
    rule: str
    matched: tuple[str, ...]
    language: str

    @property
    def reason(self) -> str:
        """One line for people: which rule decided, on what."""
        on = f" on {', '.join(self.matched)}" if self.matched else ""
        return f"rule {self.rule}{on}"


def resolve_language(request: TriageRequest, policy: TriagePolicy) -> str:
    """The customer's language when given and supported; else guessed from the text."""
    if request.language:
        primary = request.language.split("-")[0].lower()
        if primary in policy.languages:
            return primary
    if _CJK.search(request.subject) or _CJK.search(request.description):
        return "zh" if "zh" in policy.languages else policy.default_language
    return "en" if "en" in policy.languages else policy.default_language


def judge(request: TriageRequest, policy: TriagePolicy) -> Judgement:
    """Preliminary judgement of one request under the triage policy."""
    language = resolve_language(request, policy)
    hits = policy.hits(language, Words.of(f"{request.subject}\n{request.description}"))
    complaint = _complaint(request, policy.complaints, language, hits)
    if complaint is not None:
        severity, rule_name, evidence = complaint
        complaints = policy.complaints
        major = severity == "major"
        complexity = complaints.major_complexity if major else complaints.ordinary_complexity
        return Judgement(complexity, "complaint", True, severity, rule_name, evidence, language)
    facts = {
        "channel": request.channel,
        "product_line": request.product_line,
        "problem_type": request.problem_type,
        "priority": request.priority,
        "tier": request.tier,
        "language": language,
    }
    for rule in policy.rules:
        matched = rule.when.evidence(facts, language, hits)
        if matched is not None:
            category = CATEGORY_OF[rule.complexity]
            return Judgement(rule.complexity, category, False, "none", rule.name, matched, language)
    complexity = policy.default_complexity
    return Judgement(complexity, CATEGORY_OF[complexity], False, "none", "default", (), language)


def _complaint(
    request: TriageRequest, policy: ComplaintPolicy, language: str, hits: Set[str]
) -> tuple[ComplaintSeverity, str, tuple[str, ...]] | None:
    found = policy.keywords.find(language, hits)
    by_type = request.problem_type in policy.problem_types
    if not found and not by_type:
        return None
    evidence = tuple(found) + ((f"problem_type={request.problem_type}",) if by_type else ())
    major = policy.major_keywords.find(language, hits)
    if major:
        return "major", "complaint.major-keywords", (*evidence, *major)
    if request.tier and request.tier in policy.major_customer_tiers:
        return "major", "complaint.major-tier", (*evidence, f"tier={request.tier}")
    if request.priority in policy.major_priorities:
        return "major", "complaint.major-priority", (*evidence, f"priority={request.priority}")
    return "ordinary", "complaint", evidence

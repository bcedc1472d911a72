"""Policy sections of intake: how requests are numbered and triaged."""

from __future__ import annotations

import re
from functools import cached_property
from zoneinfo import ZoneInfo, available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.vocabulary import Channel, Complexity, Priority


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
    """Phrases looked for in subject and description, per language."""

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
        return {k.lower(): [p.strip().lower() for p in v] for k, v in value.items()}

    def find(self, language: str, text: str) -> list[str]:
        """The phrases of ``language`` (and ``any``) that occur in lower-cased ``text``.

        A plain substring test first (fast, in C); only phrases that pass it are checked for
        word boundaries. Triage runs this for every rule of every request.
        """
        found: list[str] = []
        for phrase, pattern in (*self._compiled.get(language, ()), *self._compiled.get("any", ())):
            if phrase in text and (pattern is None or pattern.search(text)):
                found.append(phrase)
        return sorted(set(found))

    @cached_property
    def _compiled(self) -> dict[str, list[tuple[str, re.Pattern[str] | None]]]:
        return {
            language: [(p, _word_pattern(p) if p.isascii() else None) for p in phrases]
            for language, phrases in self.phrases.items()
        }

    def __bool__(self) -> bool:
        return bool(self.phrases)


def _word_pattern(phrase: str) -> re.Pattern[str]:
    """Alphabetic phrases match whole words (a plural allowed); CJK, written without spaces,
    matches as a substring and needs no pattern."""
    return re.compile(rf"\b{re.escape(phrase)}(?:s|es)?\b")


class TriageCondition(_Section):
    """Every listed condition must hold; within a list, any value matches."""

    channels: list[Channel] = []
    product_lines: list[str] = []
    problem_types: list[str] = []
    priorities: list[Priority] = []
    customer_tiers: list[str] = []
    languages: list[str] = []
    keywords: Keywords = Keywords()

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
            )
        ):
            raise ValueError("a rule needs at least one condition")
        return self


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

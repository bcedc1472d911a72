"""A labelled set of requests, and how well a triage policy judges them.

``desk policy check --triage-cases FILE`` reads such a file (``tests/intake/triage_cases.yaml``
is the shipped one) and reports the accuracy per complexity class, with the requests it got
wrong: the evidence an operator changes rules on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from services.policy.triage import Judgement, TriagePolicy, TriageRequest, judge
from services.vocabulary import Channel, Complexity, Priority


class TriageCase(BaseModel):
    """One request and the complexity a person gave it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(min_length=1)
    description: str = Field(min_length=1)
    complexity: Complexity
    channel: Channel = "email"
    language: str | None = None
    product_line: str | None = None
    problem_type: str | None = None
    priority: Priority = "normal"
    tier: str | None = None

    def request(self) -> TriageRequest:
        return TriageRequest(
            subject=self.subject,
            description=self.description,
            channel=self.channel,
            product_line=self.product_line,
            problem_type=self.problem_type,
            priority=self.priority,
            language=self.language,
            tier=self.tier,
        )


class TriageCases(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cases: list[TriageCase] = Field(min_length=1)


@dataclass
class ClassScore:
    """How one complexity class fared: right out of total, and the misses."""

    complexity: Complexity
    right: int = 0
    total: int = 0
    misses: list[tuple[TriageCase, Judgement]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.right / self.total if self.total else 1.0


def score(policy: TriagePolicy, cases: TriageCases) -> list[ClassScore]:
    """Per complexity class (simple, general, complex): how many cases triage got right."""
    scores: dict[Complexity, ClassScore] = {
        c: ClassScore(c) for c in ("simple", "general", "complex")
    }
    for case in cases.cases:
        judged = judge(case.request(), policy)
        found = scores[case.complexity]
        found.total += 1
        if judged.complexity == case.complexity:
            found.right += 1
        else:
            found.misses.append((case, judged))
    return list(scores.values())

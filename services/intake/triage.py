"""Preliminary judgement of a request: simple inquiry, general fault or complex problem.

Pure: a request and the policy in, a :class:`Triage` out. Rules come from the policy's
``triage`` section, ordered, first match wins; complaints are recognised first and form their
own category, ordinary or major. The result names the rule that decided and what it matched,
and the policy version, so a ticket's history explains its triage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.intake.contract import Request
from services.policy.triage import ComplaintPolicy, TriageCondition, TriagePolicy
from services.vocabulary import CATEGORY_OF, Category, ComplaintSeverity, Complexity

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class Triage:
    complexity: Complexity
    category: Category
    complaint: bool
    complaint_severity: ComplaintSeverity
    rule: str
    matched: tuple[str, ...]
    language: str
    policy_version: str

    @property
    def reason(self) -> str:
        """One line for people: which rule decided, on what."""
        on = f" on {', '.join(self.matched)}" if self.matched else ""
        return f"rule {self.rule}{on}"


def resolve_language(request: Request, policy: TriagePolicy) -> str:
    """The customer's language when given and supported; else guessed from the text."""
    if request.customer.language:
        primary = request.customer.language.split("-")[0].lower()
        if primary in policy.languages:
            return primary
    if _CJK.search(request.subject) or _CJK.search(request.description):
        return "zh" if "zh" in policy.languages else policy.default_language
    return "en" if "en" in policy.languages else policy.default_language


def triage(request: Request, policy: TriagePolicy, version: str) -> Triage:
    language = resolve_language(request, policy)
    text = f"{request.subject}\n{request.description}".lower()

    complaint = _complaint(request, policy.complaints, language, text)
    if complaint is not None:
        severity, rule_name, evidence = complaint
        complexity = (
            policy.complaints.major_complexity
            if severity == "major"
            else policy.complaints.ordinary_complexity
        )
        return Triage(
            complexity, "complaint", True, severity, rule_name, evidence, language, version
        )

    facts = {
        "channel": request.channel,
        "product_line": request.product_line,
        "problem_type": request.problem_type,
        "priority": request.priority,
        "tier": request.customer.tier,
        "language": language,
    }
    for rule in policy.rules:
        matched = _matches(rule.when, facts, language, text)
        if matched is not None:
            return Triage(
                rule.complexity,
                CATEGORY_OF[rule.complexity],
                False,
                "none",
                rule.name,
                matched,
                language,
                version,
            )
    complexity = policy.default_complexity
    return Triage(
        complexity, CATEGORY_OF[complexity], False, "none", "default", (), language, version
    )


def _complaint(
    request: Request, policy: ComplaintPolicy, language: str, text: str
) -> tuple[ComplaintSeverity, str, tuple[str, ...]] | None:
    found = policy.keywords.find(language, text)
    by_type = request.problem_type in policy.problem_types
    if not found and not by_type:
        return None
    evidence = tuple(found) + ((f"problem_type={request.problem_type}",) if by_type else ())
    major = policy.major_keywords.find(language, text)
    if major:
        return "major", "complaint.major-keywords", (*evidence, *major)
    if request.customer.tier and request.customer.tier in policy.major_customer_tiers:
        return "major", "complaint.major-tier", (*evidence, f"tier={request.customer.tier}")
    if request.priority in policy.major_priorities:
        return "major", "complaint.major-priority", (*evidence, f"priority={request.priority}")
    return "ordinary", "complaint", evidence


def _matches(
    when: TriageCondition, facts: dict[str, str | None], language: str, text: str
) -> tuple[str, ...] | None:
    """What made every condition hold, or None if one does not."""
    evidence: list[str] = []
    for name, allowed in when.checks:
        actual = facts[name]
        if actual not in allowed:
            return None
        evidence.append(f"{name}={actual}")
    if when.keywords:
        found = when.keywords.find(language, text)
        if not found:
            return None
        evidence.extend(found)
    return tuple(evidence)

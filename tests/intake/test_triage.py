"""Triage under the shipped default policy (pure: no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from services.intake.contract import Request, read_request
from services.intake.triage import resolve_language, triage
from services.policy import DEFAULT_POLICY, Policy
from shared.policyfile import load_policy
from tests.intake.requests import encode, valid

pytestmark = pytest.mark.unit

POLICY, VERSION = load_policy(DEFAULT_POLICY, Policy)


def request(**changes: Any) -> Request:
    parsed = read_request(encode(valid(**changes)))
    assert isinstance(parsed, Request), parsed
    return parsed


@pytest.mark.parametrize(
    ("changes", "complexity", "category", "rule"),
    [
        (
            {
                "channel": "phone",
                "subject": "How do I reset my password?",
                "description": "I forgot it.",
                "product_line": None,
                "customer": {"name": "Ann", "phone": "+4930123456", "language": "en"},
            },
            "simple",
            "inquiry",
            "questions",
        ),
        (
            {
                "subject": "请问发票怎么开",
                "description": "想了解一下开发票的流程",
                "product_line": None,
            },
            "simple",
            "inquiry",
            "questions",
        ),
        (
            {
                "subject": "PC will not boot",
                "description": "Black screen.",
                "product_line": "pc",
                "customer": {"name": "Bo", "email": "bo@example.com", "language": "en"},
            },
            "general",
            "fault",
            "hardware-fault",
        ),
        (
            {
                "subject": "系统瘫痪",
                "description": "整个部门都无法登录，服务中断",
                "product_line": None,
            },
            "complex",
            "problem",
            "security-or-outage",
        ),
        (
            {
                "subject": "Data question",
                "description": "please look",
                "priority": "urgent",
                "product_line": None,
            },
            "complex",
            "problem",
            "urgent-is-complex",
        ),
        (
            {
                "subject": "Something odd",
                "description": "not sure what",
                "product_line": None,
                "customer": {"name": "Cy", "email": "cy@example.com", "language": "en"},
            },
            "general",
            "fault",
            "default",
        ),
    ],
)
def test_sop_seed_requests_are_triaged(
    changes: dict[str, Any], complexity: str, category: str, rule: str
) -> None:
    result = triage(request(**changes), POLICY.triage, VERSION)
    assert (result.complexity, result.category, result.rule) == (complexity, category, rule)
    assert result.complaint is False
    assert result.policy_version == VERSION
    assert rule in result.reason


def test_a_complaint_is_its_own_category_and_names_its_evidence() -> None:
    result = triage(
        request(subject="我要投诉", description="客服态度恶劣，要求赔偿", product_line=None),
        POLICY.triage,
        VERSION,
    )
    assert (result.category, result.complaint, result.complaint_severity) == (
        "complaint",
        True,
        "ordinary",
    )
    assert result.complexity == "general"
    assert set(result.matched) >= {"投诉", "态度恶劣", "赔偿"}


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        (
            {"subject": "投诉", "description": "不解决我就找律师，找媒体曝光"},
            "complaint.major-keywords",
        ),
        (
            {
                "subject": "complaint",
                "description": "This is unacceptable.",
                "customer": {
                    "name": "V",
                    "email": "v@example.com",
                    "language": "en",
                    "tier": "vip",
                },
            },
            "complaint.major-tier",
        ),
        (
            {"subject": "投诉", "description": "非常不满意", "priority": "urgent"},
            "complaint.major-priority",
        ),
    ],
)
def test_major_complaints_are_recognised(changes: dict[str, Any], rule: str) -> None:
    result = triage(request(product_line=None, **changes), POLICY.triage, VERSION)
    assert (result.complaint_severity, result.rule, result.complexity) == ("major", rule, "complex")


def test_complaint_by_problem_type_even_without_words() -> None:
    result = triage(request(problem_type="complaint"), POLICY.triage, VERSION)
    assert result.category == "complaint"
    assert "problem_type=complaint" in result.matched


def test_keywords_only_count_in_the_requests_language() -> None:
    english = request(
        subject="Question about 投诉 word",
        description="What does it mean?",
        customer={"name": "E", "email": "e@example.com", "language": "en"},
        product_line=None,
    )
    assert resolve_language(english, POLICY.triage) == "en"
    assert triage(english, POLICY.triage, VERSION).category == "inquiry"


def test_language_is_guessed_from_the_text_when_not_given() -> None:
    chinese = request(customer={"name": "L", "email": "l@example.com"})
    english = request(
        subject="Printer", description="It jams", customer={"name": "L", "email": "l@example.com"}
    )
    assert resolve_language(chinese, POLICY.triage) == "zh"
    assert resolve_language(english, POLICY.triage) == "en"


def test_english_keywords_match_whole_words_and_plurals() -> None:
    plural = triage(
        request(
            subject="Errors everywhere",
            description="the app shows errors",
            customer={"name": "W", "email": "w@example.com", "language": "en"},
            product_line=None,
        ),
        POLICY.triage,
        VERSION,
    )
    assert (plural.rule, plural.matched) == ("fault-words", ("error",))
    result = triage(
        request(
            subject="The errand app",
            description="my errands list",
            customer={"name": "W", "email": "w@example.com", "language": "en"},
            product_line=None,
        ),
        POLICY.triage,
        VERSION,
    )
    assert result.rule == "default", "'error' must not match inside 'errand'"


def english(subject: str, description: str = "see subject", **changes: Any) -> Any:
    customer = {"name": "E", "email": "e@example.com", "language": "en"}
    found = request(subject=subject, description=description, customer=customer,
                    product_line=None, **changes)  # fmt: skip
    return triage(found, POLICY.triage, VERSION)


def test_an_outage_told_in_other_words_is_complex() -> None:
    """The issue's example: no rule names it, a scope and a failure word do."""
    result = english("Login", "nobody in the Shanghai office has been able to log in since nine")
    assert (result.complexity, result.rule) == ("complex", "many-people-affected")
    assert set(result.matched) >= {"nobody", "able to"}
    chinese = triage(
        request(
            subject="登录", description="上海办公室所有人从九点开始都登录不上", product_line=None
        ),
        POLICY.triage,
        VERSION,
    )
    assert (chinese.complexity, chinese.rule) == ("complex", "many-people-affected")


def test_several_systems_failing_together_is_complex_and_synonyms_count_once() -> None:
    together = english("Trouble", "The ERP and the VPN both fail since the update")
    assert (together.complexity, together.rule) == ("complex", "several-systems-failing")
    same_system = english("Mail", "My email and my mail app fail to sync")
    assert same_system.complexity == "general", "email and mail are one system"


def test_words_not_phrases_a_question_or_a_fault() -> None:
    assert english("Invoices", "Could you send the invoices for October?").complexity == "simple"
    jammed = english("Printer", "It jammed again and keeps jamming")
    assert (jammed.complexity, jammed.matched) == ("general", ("jam",))
    asked_about_a_fault = english("Printer?", "Why does the printer keep jamming?")
    assert asked_about_a_fault.complexity == "general", "a question about a fault is a fault"

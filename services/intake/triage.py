"""Preliminary judgement of a request: simple inquiry, general fault or complex problem.

Pure: a request and the policy in, a :class:`Triage` out. The rules and how they are applied
live with the policy (:func:`services.policy.triage.judge`); intake adds the policy version, so
a ticket's history explains its triage.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.intake.contract import Request
from services.policy.triage import Judgement, TriagePolicy, TriageRequest, judge
from services.policy.triage import resolve_language as _resolve


@dataclass
class Triage(Judgement):
    policy_version: str = ""


def triage_request(request: Request) -> TriageRequest:
    return TriageRequest(
        subject=request.subject,
        description=request.description,
        channel=request.channel,
        product_line=request.product_line,
        problem_type=request.problem_type,
        priority=request.priority,
        language=request.customer.language,
        tier=request.customer.tier,
    )


def resolve_language(request: Request, policy: TriagePolicy) -> str:
    return _resolve(triage_request(request), policy)


def triage(request: Request, policy: TriagePolicy, version: str) -> Triage:
    judged = judge(triage_request(request), policy)
    return Triage(**vars(judged), policy_version=version)

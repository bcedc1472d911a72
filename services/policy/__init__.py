"""The system's policy file: one YAML document, a section per concern.

``triage`` and ``numbering`` (intake), later ``directory`` and ``routing`` (dispatch), ``sla``
(sla) and ``notifications`` (notify). Every service validates the whole document at start, so a
mistake anywhere stops the system with the line and field instead of surprising it later; each
then reads its own section. ``desk policy check FILE`` runs the same validation.

The shipped default (``default.yaml``) encodes ``../shared/brief/sop.md``: every figure in it is
a default a deployment changes here, never in code.
"""

from __future__ import annotations

from datetime import datetime
from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.policy.dispatch import DirectoryPolicy, RoutingPolicy, check_routing
from services.policy.intake import IntakePolicy
from services.policy.notify import NotificationPolicy
from services.policy.replies import ReplyPolicy
from services.policy.sla import SlaPolicy
from services.policy.triage import NumberingPolicy, TriagePolicy
from shared.endpoints import EndpointRefused, EndpointRule, check_endpoint
from shared.policyfile import Check, PolicySchedule
from shared.settings import Settings

__all__ = ["DEFAULT_POLICY", "Policy", "endpoints_allowed", "policy_path", "policy_schedule"]


class Policy(BaseModel):
    """The whole policy document."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    effective_from: datetime | None = Field(
        default=None,
        description="When services switch to this version, by their clock (with a UTC offset). "
        "None: in force from the start.",
    )
    approved_by: str | None = Field(
        default=None, min_length=1, description="Who signed the version off (recorded)."
    )
    numbering: NumberingPolicy = NumberingPolicy()
    intake: IntakePolicy = IntakePolicy()
    triage: TriagePolicy
    directory: DirectoryPolicy
    routing: RoutingPolicy
    sla: SlaPolicy | None = None
    notifications: NotificationPolicy | None = None
    replies: ReplyPolicy = ReplyPolicy()

    @field_validator("effective_from")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("effective_from needs a UTC offset, e.g. 2026-12-01T09:00:00+08:00")
        return value

    @model_validator(mode="after")
    def _sections_agree(self) -> Policy:
        problems = check_routing(self.directory, self.routing)
        if self.sla is not None:
            routed = {level.level for level in self.routing.escalation}
            problems += [
                f"sla.escalation level {step.level} has no routing.escalation entry"
                for step in self.sla.escalation
                if step.level not in routed
            ]
        problems += _unanswered_problems(self.routing, self.replies)
        if self.notifications is not None:
            problems += [
                f"notifications rule names unknown agent {rule.to[6:]!r}"
                for rule in self.notifications.rules
                if rule.to.startswith("agent:") and rule.to[6:] not in self.directory.agent
            ]
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _unanswered_problems(routing: RoutingPolicy, replies: ReplyPolicy) -> list[str]:
    """An automatic resolution of unanswered tickets needs its text, one the replies hold, and
    comes after the reminder."""
    name, remind, resolve = (
        routing.unanswered_resolution,
        routing.remind_unanswered_after,
        routing.resolve_unanswered_after,
    )
    if resolve is None:
        return []
    if remind is not None and remind >= resolve:
        return ["routing.remind_unanswered_after must be shorter than resolve_unanswered_after"]
    if name is None:
        return ["routing.resolve_unanswered_after needs routing.unanswered_resolution"]
    if name not in replies.templates:
        return [f"routing.unanswered_resolution names unknown reply {name!r}"]
    return []


DEFAULT_POLICY = Path(str(files("services.policy").joinpath("default.yaml")))


def policy_path(settings: Settings) -> Path:
    return settings.policy_file or DEFAULT_POLICY


def policy_schedule(settings: Settings) -> PolicySchedule[Policy]:
    """The policy versions of ``DESK_POLICY_FILE`` (a file, or a directory of versions), each in
    force from its ``effective_from``; an invalid edit is refused and logged."""
    return PolicySchedule(policy_path(settings), Policy, endpoints_allowed(settings))


def endpoints_allowed(settings: Settings) -> Check[Policy]:
    """The policy's webhook addresses must be ones the settings let notify send to
    (:mod:`shared.endpoints`; checked again, with DNS, at every send)."""
    rule = EndpointRule.of(settings)

    def check(policy: Policy) -> list[tuple[tuple[int | str, ...], str]]:
        problems: list[tuple[tuple[int | str, ...], str]] = []
        for n, agent in enumerate(policy.directory.agents):
            if agent.webhook_url is None:
                continue
            try:
                check_endpoint(agent.webhook_url, rule)
            except EndpointRefused as refused:
                problems.append((("directory", "agents", n, "webhook_url"), str(refused)))
        return problems

    return check

"""The system's policy file: one YAML document, a section per concern.

``triage`` and ``numbering`` (intake), later ``directory`` and ``routing`` (dispatch), ``sla``
(sla) and ``notifications`` (notify). Every service validates the whole document at start, so a
mistake anywhere stops the system with the line and field instead of surprising it later; each
then reads its own section. ``desk policy check FILE`` runs the same validation.

The shipped default (``default.yaml``) encodes ``../shared/brief/sop.md``: every figure in it is
a default a deployment changes here, never in code.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from services.policy.dispatch import DirectoryPolicy, RoutingPolicy, check_routing
from services.policy.intake import IntakePolicy
from services.policy.notify import NotificationPolicy
from services.policy.sla import SlaPolicy
from services.policy.triage import NumberingPolicy, TriagePolicy
from shared.policyfile import PolicyWatch
from shared.settings import Settings

__all__ = ["DEFAULT_POLICY", "Policy", "policy_path", "watch_policy"]


class Policy(BaseModel):
    """The whole policy document."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    numbering: NumberingPolicy = NumberingPolicy()
    intake: IntakePolicy = IntakePolicy()
    triage: TriagePolicy
    directory: DirectoryPolicy
    routing: RoutingPolicy
    sla: SlaPolicy | None = None
    notifications: NotificationPolicy | None = None

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
        if self.notifications is not None:
            problems += [
                f"notifications rule names unknown agent {rule.to[6:]!r}"
                for rule in self.notifications.rules
                if rule.to.startswith("agent:") and rule.to[6:] not in self.directory.agent
            ]
        if problems:
            raise ValueError("; ".join(problems))
        return self


DEFAULT_POLICY = Path(str(files("services.policy").joinpath("default.yaml")))


def policy_path(settings: Settings) -> Path:
    return settings.policy_file or DEFAULT_POLICY


def watch_policy(settings: Settings) -> PolicyWatch[Policy]:
    """The policy, reloaded when its file changes (an invalid edit is refused and logged)."""
    return PolicyWatch(policy_path(settings), Policy)

"""Rendering notices: the policy's templates in the recipient's language or the fallback
(:mod:`shared.templating`)."""

from __future__ import annotations

from typing import Any

from services.policy.notify import NotificationPolicy
from shared.templating import names_used, render_text
from shared.templating import pick_language as _pick

__all__ = ["pick_language", "render", "render_text", "uses"]


def pick_language(policy: NotificationPolicy, template: str, language: str | None) -> str:
    return _pick(policy.templates[template], language, policy.default_language)


def render(
    policy: NotificationPolicy, template: str, language: str, context: dict[str, Any]
) -> tuple[str, str]:
    """(subject, body)."""
    text = policy.templates[template][language]
    subject = render_text(text.subject, context).strip()
    return " ".join(subject.split()), render_text(text.body, context).strip()


def uses(policy: NotificationPolicy, template: str, language: str) -> frozenset[str]:
    """The context variables a template reads, in this language (subject and body)."""
    text = policy.templates[template][language]
    return names_used(text.subject) | names_used(text.body)

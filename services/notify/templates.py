"""Rendering notices: the policy's templates in the recipient's language or the fallback
(:mod:`shared.templating`)."""

from __future__ import annotations

from typing import Any

from services.policy.notify import NotificationPolicy
from shared.templating import names_used, render_text
from shared.templating import pick_language as _pick

__all__ = ["pick_language", "render", "render_again", "render_text", "uses"]


def pick_language(policy: NotificationPolicy, template: str, language: str | None) -> str:
    return _pick(policy.templates[template], language, policy.default_language)


def render(
    policy: NotificationPolicy, template: str, language: str, context: dict[str, Any]
) -> tuple[str, str]:
    """(subject, body)."""
    text = policy.templates[template][language]
    return _one_line(render_text(text.subject, context)), render_text(text.body, context).strip()


def render_again(  # noqa: PLR0917 - one call site names them
    policy: NotificationPolicy,
    template: str,
    language: str,
    context: dict[str, Any],
    rendered: tuple[str, str],
    changed: frozenset[str],
) -> tuple[str, str]:
    """``rendered`` (subject, body) with ``context``: a part that reads none of the ``changed``
    variables as it was, without rendering it again."""
    text = policy.templates[template][language]
    subject, body = rendered
    if names_used(text.subject) & changed:
        subject = _one_line(render_text(text.subject, context))
    if names_used(text.body) & changed:
        body = render_text(text.body, context).strip()
    return subject, body


def _one_line(subject: str) -> str:
    return " ".join(subject.split())


def uses(policy: NotificationPolicy, template: str, language: str) -> frozenset[str]:
    """The context variables a template reads, in this language (subject and body)."""
    text = policy.templates[template][language]
    return names_used(text.subject) | names_used(text.body)

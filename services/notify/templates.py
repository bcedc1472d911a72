"""Rendering notices: Jinja2 in a sandbox, the recipient's language or the fallback.

Templates come from the policy file, which operators edit: the sandbox keeps a template from
reaching Python internals, and an unknown variable renders empty rather than failing a notice.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Template
from jinja2.sandbox import SandboxedEnvironment

from services.policy.notify import NotificationPolicy

_ENVIRONMENT = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


@cache
def _compiled(source: str) -> Template:
    return _ENVIRONMENT.from_string(source)


def pick_language(policy: NotificationPolicy, template: str, language: str | None) -> str:
    """``zh-CN`` uses ``zh`` if there is no ``zh-CN`` variant; else the default language."""
    variants = policy.templates[template]
    for candidate in (language, (language or "").split("-")[0]):
        if candidate and candidate in variants:
            return candidate
    return policy.default_language


def render(
    policy: NotificationPolicy, template: str, language: str, context: dict[str, Any]
) -> tuple[str, str]:
    """(subject, body)."""
    text = policy.templates[template][language]
    subject = _compiled(text.subject).render(context).strip()
    return " ".join(subject.split()), _compiled(text.body).render(context).strip()


def render_text(source: str, context: dict[str, Any]) -> str:
    return _compiled(source).render(context)

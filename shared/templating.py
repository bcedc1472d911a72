"""Texts from the policy file rendered for people: Jinja2 in a sandbox, in their language.

Operators edit these templates: the sandbox keeps a template from reaching Python internals,
and an unknown variable renders empty rather than failing. notify renders notices with it,
dispatch an agent's standard replies.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from jinja2 import Template, meta
from jinja2.sandbox import SandboxedEnvironment

_ENVIRONMENT = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


@cache
def _compiled(source: str) -> tuple[Template, dict[str, Any]]:
    """The template and its globals, merged once: ``Template.render`` merges them (a
    ``ChainMap`` walked) on every call, two thirds of a short notice's rendering."""
    template = _ENVIRONMENT.from_string(source)
    return template, dict(template.globals)


def render_text(source: str, context: dict[str, Any]) -> str:
    """``Template.render(context)``, its globals merged in advance (the same context)."""
    template, globals_ = _compiled(source)
    try:
        return template.environment.concat(
            template.root_render_func(template.new_context({**globals_, **context}, shared=True))
        )
    except Exception:
        template.environment.handle_exception()  # re-raised, as ``render`` does


@cache
def names_used(source: str) -> frozenset[str]:
    """The variables a template reads: a context value it never reads need not be computed."""
    return frozenset(meta.find_undeclared_variables(_ENVIRONMENT.parse(source)))


def pick_language(variants: Mapping[str, object], language: str | None, default: str) -> str:
    """``zh-CN`` uses ``zh`` if there is no ``zh-CN`` variant; else ``default``."""
    for candidate in (language, (language or "").split("-")[0]):
        if candidate and candidate in variants:
            return candidate
    return default

"""Texts from the policy file rendered for people: Jinja2 in a sandbox, in their language.

Operators edit these templates: the sandbox keeps a template from reaching Python internals,
and an unknown variable renders empty rather than failing. notify renders notices with it,
dispatch an agent's standard replies. The filter ``local`` shows a moment (an event's time, as
JSON carries it) in the context's ``time_zone``: people read "2026-11-20 18:00 (Asia/Shanghai)",
not "2026-11-20T10:00:00Z".
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Template, meta, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

_ENVIRONMENT = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


@pass_context
def local(context: Context, value: object) -> object:
    """``value`` (a datetime, or ISO 8601 text) as ``YYYY-MM-DD HH:MM (zone)`` in the context's
    ``time_zone`` (UTC without one); anything else as it is — a notice never fails on it."""
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    if not isinstance(moment, datetime):
        return value
    zone = _zone(str(context.get("time_zone") or "UTC"))
    shown = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(zone)
    return f"{shown:%Y-%m-%d %H:%M} ({zone.key})"


@cache
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


_ENVIRONMENT.filters["local"] = local


@cache
def _compiled(source: str) -> tuple[Template, dict[str, Any]]:
    """The template and its globals, merged once: ``Template.render`` merges them (a
    ``ChainMap`` walked) on every call, two thirds of a short notice's rendering."""
    template = _ENVIRONMENT.from_string(source)
    return template, dict(template.globals)


def check(source: str) -> None:
    """Compile ``source`` as it will be rendered: a syntax error or an unknown filter raises
    (:class:`jinja2.TemplateSyntaxError`) when the policy loads, not when a notice is made."""
    _compiled(source)


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

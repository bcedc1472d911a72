"""The policy's texts for people: moments shown where the people are, bad templates refused
when the policy loads. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from jinja2 import TemplateSyntaxError

from shared.templating import check, render_text

pytestmark = pytest.mark.unit


def test_a_moment_is_shown_in_the_notices_time_zone() -> None:
    """Notices showed an event's deadline as JSON carries it ("2026-12-03T15:18:29.245993Z"):
    an agent in Shanghai read a UTC timestamp."""
    text = "due at {{ event.deadline | local }}"
    event = {"deadline": "2026-12-03T15:18:29.245993Z"}
    shanghai = {"event": event, "time_zone": "Asia/Shanghai"}
    assert render_text(text, shanghai) == "due at 2026-12-03 23:18 (Asia/Shanghai)"
    assert render_text(text, {"event": event}) == "due at 2026-12-03 15:18 (UTC)"
    moment = {"event": {"deadline": datetime(2026, 12, 3, 15, 18, tzinfo=UTC)}, "time_zone": "UTC"}
    assert render_text(text, moment) == "due at 2026-12-03 15:18 (UTC)"
    # Never a failed notice over it: text that is no moment, or nothing, shows as it is.
    assert render_text(text, {"event": {"deadline": "soon"}}) == "due at soon"
    assert render_text(text, {"event": {}, "time_zone": "Nowhere/Else"}) == "due at "


def test_a_template_with_an_unknown_filter_is_refused_before_it_is_used() -> None:
    """Only parsed at load, a template naming a filter that does not exist loaded, then failed
    every notice it made (template_error)."""
    check("{{ number }}: {{ event.deadline | local }}")
    with pytest.raises(TemplateSyntaxError, match="No filter named 'localtime'"):
        check("{{ event.deadline | localtime }}")
    with pytest.raises(TemplateSyntaxError):
        check("{{ number ")

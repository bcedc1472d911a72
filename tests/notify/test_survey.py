"""The survey link of a resolution notice: a customer token for that one ticket. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.notify.survey import SurveyLinks
from services.vocabulary import CUSTOMER_COMMANDS
from shared.credentials import Unauthenticated, verify_bearer
from shared.keys import KeyRing

pytestmark = pytest.mark.unit

RING = KeyRing.generate({"notify": ("system", "customers"), "desk": ("agents",)})
NOW = datetime(2026, 11, 20, 8, tzinfo=UTC)


def test_the_link_carries_a_customer_token_bound_to_the_ticket_until_it_expires() -> None:
    links = SurveyLinks("http://console.example.com/", RING.signing_key("notify"), timedelta(7))
    context = links.context("REQ-2026-000001", NOW)
    assert context["console_url"] == "http://console.example.com"
    credential = verify_bearer(RING, context["token"], now=NOW, max_ttl=timedelta(days=7))
    assert (credential.kind, credential.ticket) == ("customer", "REQ-2026-000001")
    assert credential.commands == CUSTOMER_COMMANDS
    with pytest.raises(Unauthenticated, match="expired"):
        verify_bearer(RING, context["token"], now=NOW + timedelta(days=7), max_ttl=timedelta(7))


def test_without_a_key_vouching_for_customers_the_link_has_no_token() -> None:
    assert SurveyLinks("http://c", None, timedelta(days=1)).context("N", NOW)["token"] == ""

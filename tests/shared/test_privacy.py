"""Contact data masked wherever it is not the record itself: logs, dead letters, rejections."""

from __future__ import annotations

import pytest

from shared.logging import scrub_contacts
from shared.privacy import mask_email, mask_phone, scrub

pytestmark = pytest.mark.unit


def test_addresses_and_numbers_are_masked_enough_to_recognise_not_to_use() -> None:
    assert mask_email("wang.fang@example.com") == "w***@example.com"
    assert mask_phone("+8613800001234") == "+86***34"
    assert mask_phone("13800001234") == "138***34"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "customer: Input should be a valid dictionary [input_value='+8613800001234']",
            "customer: Input should be a valid dictionary [input_value='+86***34']",
        ),
        ("write to Wang.Fang@Example.com.", "write to W***@Example.com."),
        ("call 138 0000 1234 or +49 30 1234567", "call 138***34 or +49***67"),
        (
            "{'email': 'c1@example.com', 'phone': '13800001234'}",
            "{'email': 'c***@example.com', 'phone': '138***34'}",
        ),
        ("from o'brien@example.ie, x!#y@ex.com", "from o***@example.ie, x***@ex.com"),
    ],
)
def test_contacts_inside_text_are_masked(text: str, masked: str) -> None:
    assert scrub(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "REQ-2026-000123",
        "ticket 019a3f2c-7d11-7000-8000-000000000001",
        "2026-11-20T09:30:00+08:00 and 2026-11-20",
        "t1.requests.incoming/0/123456789",
        "1048676 bytes; at most 262144",
        "retry in 0.25 s, attempt 3 of 5",
        "sha256:0123456789abcdef",
    ],
)
def test_what_is_not_contact_data_is_left_alone(text: str) -> None:
    assert scrub(text) == text


def test_the_log_processor_masks_every_string_however_deep() -> None:
    event = {
        "event": "message dead-lettered",
        "error": "amount: [input_value='call +8613800001234']",
        "context": {"to": ["wang.fang@example.com", 3], "count": 2},
        "record": "t.x/0/7",
    }
    scrubbed = scrub_contacts(None, "error", event)
    assert scrubbed == {
        "event": "message dead-lettered",
        "error": "amount: [input_value='call +86***34']",
        "context": {"to": ["w***@example.com", 3], "count": 2},
        "record": "t.x/0/7",
    }

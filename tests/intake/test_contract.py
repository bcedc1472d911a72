"""The adapter contract, validated in-process (the same table runs through Kafka in
test_intake.py)."""

from __future__ import annotations

import unicodedata

import pytest

from services.intake.contract import Reason, Refusal, Request, read_request
from tests.intake.requests import BAD_INPUTS, encode, valid

pytestmark = pytest.mark.unit


def test_a_valid_request_is_read_and_normalised() -> None:
    decomposed = unicodedata.normalize("NFD", "Café")
    request = read_request(
        encode(
            valid(
                subject=f"  {decomposed} printer  ",
                customer={"name": "Zoë", "phone": "+86 (21) 5555-0100", "email": "A@B.CN"},
                priority="high",
                product_line="Printer",
            )
        )
    )
    assert isinstance(request, Request)
    assert request.subject == "Café printer"
    assert unicodedata.is_normalized("NFC", request.subject)
    assert request.customer.phone == "+862155550100"
    assert request.customer.email == "a@b.cn"
    assert request.product_line == "printer"
    assert request.key == "email:m-1"


@pytest.mark.parametrize(
    ("case", "raw", "reason", "field"), BAD_INPUTS, ids=[case for case, *_ in BAD_INPUTS]
)
def test_each_bad_input_is_refused_with_its_reason(
    case: str, raw: bytes, reason: str, field: str
) -> None:
    if reason in (Reason.UNKNOWN_REPLY_TICKET, Reason.RECEIVED_AT_OUT_OF_RANGE):
        # Valid in shape; only intake knows (its tickets, its clock and the policy's bounds).
        assert isinstance(read_request(raw), Request), case
        return
    refusal = read_request(raw)
    assert isinstance(refusal, Refusal), case
    assert (refusal.reason, refusal.field) == (reason, field), refusal
    assert refusal.message


def test_the_table_covers_at_least_25_cases_and_every_reason() -> None:
    assert len(BAD_INPUTS) >= 25
    covered = {reason for _, _, reason, _ in BAD_INPUTS}
    assert Reason.all() == covered


def test_a_refusal_keeps_the_identity_it_could_read() -> None:
    refusal = read_request(encode(valid("m-77", channel="email", priority="asap")))
    assert isinstance(refusal, Refusal)
    assert (refusal.channel, refusal.channel_message_id) == ("email", "m-77")


def test_control_characters_are_replaced_and_line_breaks_kept_only_in_the_description() -> None:
    request = read_request(
        encode(
            valid(
                subject="Printer\x1b[2J\r\nbroken",
                description="It beeps\x07 all day.\r\nPlease help.",
                customer={"name": "Wang\x08\x08Li", "email": "a@b.cn"},
            )
        )
    )
    assert isinstance(request, Request)
    assert request.subject == "Printer\ufffd[2J broken"
    assert request.description == "It beeps\ufffd all day.\r\nPlease help."
    assert request.customer.name == "Wang\ufffd\ufffdLi"


def test_bidi_overrides_are_replaced_and_open_isolates_closed() -> None:
    """A subject that would read as something it is not, and a name whose open isolate would
    reorder what a screen shows after it: both recorded as they can be shown safely."""
    request = read_request(
        encode(
            valid(
                subject="invoice \u202efdp.exe",
                description="عربي \u2067نص\nsecond line",
                customer={"name": "\u2067شركة", "email": "a@b.cn"},
            )
        )
    )
    assert isinstance(request, Request)
    assert request.subject == "invoice \ufffdfdp.exe"
    assert request.description == "عربي \ufffdنص\nsecond line"
    assert request.customer.name == "\ufffdشركة"


def test_a_subject_at_its_limit_with_an_open_isolate_stays_within_it() -> None:
    """The mail adapter cuts a subject to 300 characters, the contract's limit; tidying must not
    lengthen it (closing the isolate with an added character made it 301, and the mail
    bounced)."""
    request = read_request(encode(valid(subject="\u2067" + "x" * 299)))
    assert isinstance(request, Request), request
    assert request.subject == "\ufffd" + "x" * 299


@pytest.mark.parametrize(
    "address",
    ["o'brien@example.ie", "a+tag@mail.example.com", "张伟@例子.中国", "x_y-z@ex-ample.co"],
)
def test_addresses_mail_can_go_to_as_written_are_taken(address: str) -> None:
    request = read_request(encode(valid("mail-1", customer={"name": "C", "email": address})))
    assert isinstance(request, Request), request
    assert request.customer.email == address.lower()

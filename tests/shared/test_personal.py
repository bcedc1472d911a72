"""Sealed personal fields (shared/personal.py): sealed for a subject, opened with its key, read
as "erased" once the key is gone — never an exception."""

from __future__ import annotations

import base64
import json
import secrets

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticSerializationError

from shared.keystore import NONCE_BYTES
from shared.personal import (
    ERASED,
    NONCE_BLOCK,
    SEALED_ONLY,
    DataKeys,
    Erased,
    OptionalPersonalText,
    PersonalText,
    Sealed,
    SealedPart,
    SealedTogether,
    sealed_refs,
)


class Contact(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: PersonalText
    email: OptionalPersonalText = None
    tier: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)

    number: str
    contact: Contact
    body: PersonalText
    copies: list[Contact] = []


def message() -> Message:
    wang = Contact(name="Wang Fang", email="wang.fang@example.com", tier="vip")
    return Message(number="REQ-1", contact=wang, body="My router is broken", copies=[wang])


def keys(*refs: str) -> DataKeys:
    return DataKeys({ref: secrets.token_bytes(32) for ref in refs})


def test_sealing_hides_every_personal_field_and_keeps_the_rest() -> None:
    sealed = keys("cust-1").seal(message(), "cust-1")
    text = sealed.model_dump_json()

    for clear in ("Wang Fang", "wang.fang@example.com", "My router is broken"):
        assert clear not in text
    document = json.loads(text)
    assert document["number"] == "REQ-1"
    assert document["contact"]["tier"] == "vip"
    assert set(document["contact"]["name"]) == {"ref", "ct"}
    assert document["contact"]["name"]["ref"] == "cust-1"
    assert sealed_refs(sealed) == {"cust-1"}


def test_a_sealed_event_read_back_opens_with_its_key() -> None:
    ring = keys("cust-1")
    text = ring.seal(message(), "cust-1").model_dump_json()

    read = Message.model_validate_json(text)
    assert isinstance(read.body, Sealed)
    assert read.body == "[sealed cust-1]"
    assert ring.reveal(read) == message()


def test_without_its_key_a_field_reads_erased() -> None:
    text = keys("cust-1").seal(message(), "cust-1").model_dump_json()
    read = Message.model_validate_json(text)

    for ring in (DataKeys({"cust-1": None}), DataKeys({}), keys("cust-1")):
        opened = ring.reveal(read)
        assert opened.contact.name is ERASED
        assert isinstance(opened.body, Erased)
        assert opened.body == "erased"
        assert opened.number == "REQ-1"


def test_a_ciphertext_moved_to_another_subject_does_not_open() -> None:
    ring = keys("cust-1", "cust-2")
    stolen = ring.seal_text("cust-1", "secret")
    assert ring.open_text(Sealed("cust-2", stolen.ct)) is ERASED
    assert ring.open_text(Sealed("cust-1", "not base64 at all!")) is ERASED


def test_a_writer_that_seals_everything_refuses_a_field_left_in_clear() -> None:
    ring = keys("cust-1")
    sealed = ring.seal(message(), "cust-1")
    assert "Wang" not in sealed.model_dump_json(context=SEALED_ONLY)
    # One field of a nested list left in clear is enough.
    leak = sealed.model_copy(update={"copies": [Contact(name="Wang Fang")]})
    with pytest.raises(PydanticSerializationError, match="in clear"):
        leak.model_dump_json(context=SEALED_ONLY)
    # What an erased subject's field reads as is no personal data; other writers are not held.
    assert "erased" in sealed.model_copy(update={"body": ERASED}).model_dump_json(
        context=SEALED_ONLY
    )
    assert "Wang Fang" in leak.model_dump_json()


def test_clear_text_of_old_events_reads_as_it_is() -> None:
    assert keys().reveal(message()) == message()
    assert (
        Message.model_validate({"number": "1", "contact": {"name": "A"}, "body": "b"}).body == "b"
    )


def test_schemas_mark_personal_fields() -> None:
    schema = json.dumps(Message.model_json_schema())
    properties = Message.model_json_schema()["$defs"]["Contact"]["properties"]
    assert properties["name"]["x-personal"] is True
    assert properties["email"]["x-personal"] is True
    assert "x-personal" not in properties["tier"]
    assert schema.count("x-personal") == 3


def test_every_field_sealed_gets_a_nonce_of_its_own_across_sealers_and_refills() -> None:
    """AES-GCM under one key must never take a nonce twice: nonces come from a pool drawn in
    blocks and shared by every sealer of a batch, and each is used once."""
    batch = keys("cust-a", "cust-b")
    a, b = batch.sealer("cust-a"), batch.sealer("cust-b")
    texts = [f"text {n}".encode() for n in range(NONCE_BLOCK * 3 + 5)]

    sealed = [
        *[a.seal_bytes(t) for t in texts],
        *[b.seal_bytes(t) for t in texts],
        *[batch.seal_bytes("cust-a", t) for t in texts],
    ]

    raw = [base64.urlsafe_b64decode(s.ct + "=" * (-len(s.ct) % 4)) for s in sealed]
    nonces = [r[:NONCE_BYTES] for r in raw]
    assert len(set(nonces)) == len(sealed)
    assert [batch.open_bytes(s) for s in sealed[: len(texts)]] == texts


class Customer(SealedTogether):
    model_config = ConfigDict(frozen=True)

    name: PersonalText
    email: OptionalPersonalText = None
    phone: OptionalPersonalText = None
    tier: str | None = None


class Receipt(BaseModel):
    number: str
    customer: Customer
    subject: PersonalText


class Copy(BaseModel):
    """Another record holding one of a customer's fields (as notify's facts do)."""

    customer_name: PersonalText


def receipt() -> Receipt:
    wang = Customer(name="Wang Fang", email="wang.fang@example.com", tier="vip")
    return Receipt(number="REQ-1", customer=wang, subject="Router broken")


def test_a_customer_is_sealed_as_one_ciphertext_in_place_of_its_fields() -> None:
    ring = keys("cust-1")
    sealed = ring.seal(receipt(), "cust-1")
    text = sealed.model_dump_json(context=SEALED_ONLY)

    for clear in ("Wang Fang", "wang.fang@example.com", "Router broken"):
        assert clear not in text
    customer = json.loads(text)["customer"]
    assert set(customer) == {"phone", "tier", "sealed"}  # no name or email of its own
    assert customer["tier"] == "vip"
    assert customer["sealed"]["ref"] == "cust-1"
    assert customer["sealed"]["parts"] == ["name", "email"]
    assert text.count('"ct"') == 2  # the customer's one, and the subject's

    read = Receipt.model_validate_json(text)
    assert isinstance(read.customer.email, SealedPart) and read.customer.phone is None
    assert read.customer.name == "[sealed cust-1]"
    assert ring.reveal(read) == receipt()
    assert ring.reveal_json(json.loads(text)) == receipt().model_dump(mode="json")
    assert sealed_refs(json.loads(text)) == sealed_refs(read) == {"cust-1"}
    erased = DataKeys({"cust-1": None}).reveal(read)
    assert erased.customer.name is ERASED and erased.customer.email is ERASED
    assert DataKeys({"cust-1": None}).reveal_json(json.loads(text))["customer"]["name"] == "erased"


def test_a_part_copied_into_another_record_travels_with_its_ciphertext() -> None:
    ring = keys("cust-1")
    read = Receipt.model_validate_json(ring.seal(receipt(), "cust-1").model_dump_json())

    copied = Copy(customer_name=read.customer.name).model_dump_json()
    assert set(json.loads(copied)["customer_name"]) == {"ref", "ct", "part"}
    assert ring.open_text(Copy.model_validate_json(copied).customer_name) == "Wang Fang"
    assert ring.reveal_json(json.loads(copied)) == {"customer_name": "Wang Fang"}
    # A customer whose fields are not all parts of one ciphertext keeps each as it is.
    mixed = read.customer.model_copy(update={"email": ring.seal_text("cust-1", "w@example.com")})
    document = json.loads(mixed.model_dump_json())
    assert "sealed" not in document and set(document["name"]) == {"ref", "ct", "part"}
    assert ring.reveal(Customer.model_validate(document)).email == "w@example.com"


def test_a_ciphertext_of_parts_and_a_single_fields_never_stand_for_each_other() -> None:
    ring = keys("cust-1")
    sealer = ring.sealer("cust-1")
    parts = sealer.parts({"name": "Wang Fang"})
    single = sealer("Wang Fang")
    assert ring.open_text(Sealed("cust-1", parts["name"].ct)) is ERASED
    assert ring.open_text(SealedPart("cust-1", single.ct, "name")) is ERASED
    assert ring.open_text(SealedPart("cust-1", parts["name"].ct, "email")) is ERASED
    assert ring.open_text(SealedPart("cust-2", parts["name"].ct, "name")) is ERASED


@pytest.mark.parametrize(
    "sealed",
    [
        {"ref": "cust-1", "ct": "x", "parts": ["tier"]},  # not a personal field
        {"ref": "cust-1", "ct": "x", "parts": ["name", "name", "nope"]},
        {"ref": "cust-1", "ct": "x", "parts": "name"},
        {"ref": "cust-1", "ct": "x"},
        {"ref": "cust-1", "ct": "x", "parts": ["email"], "more": 1},
        "name",
    ],
)
def test_a_malformed_sealed_customer_is_refused(sealed: object) -> None:
    with pytest.raises(ValidationError):
        Customer.model_validate({"sealed": sealed, "tier": "vip"})


def test_a_sealed_part_cannot_hide_a_field_given_in_clear() -> None:
    with pytest.raises(ValidationError, match="sealed part"):
        Customer.model_validate(
            {"name": "Mallory", "sealed": {"ref": "cust-1", "ct": "x", "parts": ["name"]}}
        )


def test_the_schema_says_a_customers_fields_may_be_sealed_together() -> None:
    schema = Customer.model_json_schema()
    assert schema["properties"]["sealed"]["properties"]["parts"]["items"]["enum"] == [
        "name",
        "email",
        "phone",
    ]
    assert "required" not in schema

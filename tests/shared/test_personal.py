"""Sealed personal fields (shared/personal.py): sealed for a subject, opened with its key, read
as "erased" once the key is gone — never an exception."""

from __future__ import annotations

import base64
import json
import os
import secrets
import warnings

import pytest
from pydantic import BaseModel, ConfigDict
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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_forked_child_never_takes_a_nonce_its_parent_still_holds() -> None:
    """The pool lives as long as the process; a child forked after some sealing starts with an
    empty one, or both would seal under the same key with the same next nonce."""
    sealer = DataKeys({"cust-a": secrets.token_bytes(32)}).sealer("cust-a")
    sealer.seal_bytes(b"fills the pool")
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads, 3.12+
        child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.write(write, _nonce(sealer.seal_bytes(b"child")))
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    childs = os.read(read, NONCE_BYTES)
    os.close(read)
    os.close(write)
    assert len(childs) == NONCE_BYTES
    assert childs != _nonce(sealer.seal_bytes(b"parent"))


def _nonce(sealed: Sealed) -> bytes:
    return base64.urlsafe_b64decode(sealed.ct + "=" * (-len(sealed.ct) % 4))[:NONCE_BYTES]


def test_every_field_sealed_gets_a_nonce_of_its_own_across_sealers_batches_and_refills() -> None:
    """AES-GCM under one key must never take a nonce twice: nonces come from a pool drawn in
    blocks and shared by every sealer of the process (a subject's sealer is kept from batch to
    batch), and each is used once."""
    key = secrets.token_bytes(32)
    batch = DataKeys({"cust-a": key, "cust-b": secrets.token_bytes(32)})
    later = DataKeys({"cust-a": key})  # the same subject in the next batch
    a, b = batch.sealer("cust-a"), batch.sealer("cust-b")
    texts = [f"text {n}".encode() for n in range(NONCE_BLOCK * 3 + 5)]

    sealed = [
        *[a.seal_bytes(t) for t in texts],
        *[b.seal_bytes(t) for t in texts],
        *[batch.seal_bytes("cust-a", t) for t in texts],
        *[later.sealer("cust-a")(t.decode()) for t in texts],
    ]

    raw = [base64.urlsafe_b64decode(s.ct + "=" * (-len(s.ct) % 4)) for s in sealed]
    nonces = [r[:NONCE_BYTES] for r in raw]
    assert len(set(nonces)) == len(sealed)
    assert [batch.open_bytes(s) for s in sealed[: len(texts)]] == texts
    assert [later.open_text(s) for s in sealed[-len(texts) :]] == [t.decode() for t in texts]

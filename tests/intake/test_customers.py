"""A ticket's events built from its request sealed once (services/intake/customers.py): every
personal field sealed under the customer's key and opening to what they wrote (pure)."""

from __future__ import annotations

import secrets

import yaml

from services.intake.contract import Request, read_request
from services.intake.customers import Customers, SealedTexts, identity
from services.intake.handlers import received, triaged
from services.intake.triage import triage
from services.policy import DEFAULT_POLICY, Policy
from shared.keystore import SubjectKey, new_ref
from shared.personal import SEALED_ONLY, DataKeys, Sealed
from tests.intake.requests import encode, valid


def request() -> Request:
    customer = {"name": "王芳", "email": "wang.fang@example.com", "phone": "+8613800001234"}
    files = [
        {
            "name": "王芳-invoice.pdf",
            "size": 10,
            "content_type": "application/pdf",
            "url": "https://files.example.com/王芳?token=s3cr3t",
        }
    ]
    read = read_request(
        encode(valid(customer={**customer, "customer_id": "C-7-wang-fang"}, attachments=files))
    )
    assert isinstance(read, Request)
    return read


def test_a_tickets_events_carry_every_personal_text_sealed_and_opening_to_the_request() -> None:
    asked = request()
    subject = SubjectKey(new_ref(), secrets.token_bytes(32))
    customers = Customers({identity(asked.customer): subject})
    policy = Policy.model_validate(yaml.safe_load(DEFAULT_POLICY.read_text()))
    result = triage(asked, policy.triage, "v1")

    texts = customers.sealed(asked)
    receipt = received("t-1", "REQ-1", asked, texts, result.language)
    triage_event = triaged("t-1", "REQ-1", asked, texts, result)

    # Written as intake's store writes them: a field left in clear would raise here.
    raw = "".join(e.model_dump_json(context=SEALED_ONLY) for e in (receipt, triage_event))
    for clear in ("王芳", "wang.fang@example.com", "+8613800001234", "C-7-wang-fang", "s3cr3t"):
        assert clear not in raw
    assert asked.subject not in raw
    assert triage_event.customer_key == subject.ref
    sealed = [
        receipt.customer.name,
        receipt.customer.email,
        receipt.customer.phone,
        receipt.customer.customer_id,
        receipt.subject,
        receipt.description,
        receipt.attachments[0].name,
        receipt.attachments[0].url,
        triage_event.subject,
    ]
    assert all(isinstance(s, Sealed) and s.ref == subject.ref for s in sealed)
    opened = DataKeys({subject.ref: subject.key}).reveal(receipt)
    assert opened.customer.model_dump(include={"name", "email", "phone", "customer_id"}) == {
        "name": "王芳",
        "email": "wang.fang@example.com",
        "phone": "+8613800001234",
        "customer_id": "C-7-wang-fang",
    }
    assert (opened.subject, opened.description) == (asked.subject, asked.description)
    assert isinstance(triage_event.subject, Sealed) and isinstance(receipt.subject, Sealed)
    assert triage_event.subject.ct == receipt.subject.ct  # the same text, encrypted once
    assert (asked.customer.name, asked.subject) == ("王芳", "打印机卡纸")  # the request stays clear


def test_each_field_opens_to_its_own_text_whichever_are_absent_and_however_many_files() -> None:
    """All of a request's texts are sealed in one call and taken back by position: a contact
    without some addresses, or several attachments, must not shift one text into another's
    field."""
    files = [
        {
            "name": f"photo-{n}.jpg",
            "size": n,
            "content_type": "image/jpeg",
            "url": f"https://files.example.com/{n}",
        }
        for n in (1, 2, 3)
    ]
    contacts = [
        {"name": "Li Lei", "phone": "+8613900001111"},
        {"name": "Han Meimei", "email": "han@example.com", "customer_id": "C-9"},
        {"name": "Zhao Min", "customer_id": "C-10", "phone": "+8613700002222"},
    ]
    for customer, attachments in zip(contacts, ([], files[:1], files), strict=True):
        read = read_request(encode(valid(customer=customer, attachments=attachments)))
        assert isinstance(read, Request)
        subject = SubjectKey(new_ref(), secrets.token_bytes(32))
        texts = Customers({identity(read.customer): subject}).sealed(read)
        keys = DataKeys({subject.ref: subject.key})

        opened = [keys.open_text(t) if t is not None else None for t in _texts(texts)]

        asked = read.customer
        assert opened == [
            asked.name,
            asked.email,
            asked.phone,
            asked.customer_id,
            read.subject,
            read.description,
            *[text for a in read.attachments for text in (a.name, a.url)],
        ]
        assert [(a.size, a.content_type) for a in texts.attachments] == [
            (a.size, a.content_type) for a in read.attachments
        ]


def _texts(texts: SealedTexts) -> list[str | None]:
    return [
        texts.name,
        texts.email,
        texts.phone,
        texts.customer_id,
        texts.subject,
        texts.description,
        *[text for a in texts.attachments for text in (a.name, a.url)],
    ]

"""A ticket's events built from its request sealed once (services/intake/customers.py): every
personal field sealed under the customer's key and opening to what they wrote (pure)."""

from __future__ import annotations

import secrets

import yaml

from services.intake.contract import Request, read_request
from services.intake.customers import Customers, identity
from services.intake.handlers import received, triaged
from services.intake.triage import triage
from services.policy import DEFAULT_POLICY, Policy
from shared.keystore import SubjectKey, new_ref
from shared.personal import DataKeys, Sealed
from tests.intake.requests import encode, valid


def request() -> Request:
    customer = {"name": "王芳", "email": "wang.fang@example.com", "phone": "+8613800001234"}
    read = read_request(encode(valid(customer={**customer, "customer_id": "C-7"})))
    assert isinstance(read, Request)
    return read


def test_a_tickets_events_carry_every_personal_text_sealed_and_opening_to_the_request() -> None:
    asked = request()
    subject = SubjectKey(new_ref(), secrets.token_bytes(32))
    customers = Customers({identity(asked.customer): subject})
    policy = Policy.model_validate(yaml.safe_load(DEFAULT_POLICY.read_text()))
    result = triage(asked, policy.triage, "v1")

    texts = customers.sealed(asked)
    receipt = customers.seal(asked.customer, received("t-1", "REQ-1", texts, result.language))
    triage_event = customers.seal(
        asked.customer, triaged("t-1", "REQ-1", texts, result, subject.ref)
    )

    raw = receipt.model_dump_json() + triage_event.model_dump_json()
    for clear in ("王芳", "wang.fang@example.com", "+8613800001234", "C-7", asked.subject):
        assert clear not in raw
    sealed = [
        receipt.customer.name,
        receipt.customer.email,
        receipt.customer.phone,
        receipt.customer.customer_id,
        receipt.subject,
        receipt.description,
        triage_event.subject,
    ]
    assert all(isinstance(s, Sealed) and s.ref == subject.ref for s in sealed)
    opened = DataKeys({subject.ref: subject.key}).reveal(receipt)
    assert opened.customer.model_dump(include={"name", "email", "phone", "customer_id"}) == {
        "name": "王芳",
        "email": "wang.fang@example.com",
        "phone": "+8613800001234",
        "customer_id": "C-7",
    }
    assert (opened.subject, opened.description) == (asked.subject, asked.description)
    assert isinstance(triage_event.subject, Sealed) and isinstance(receipt.subject, Sealed)
    assert triage_event.subject.ct == receipt.subject.ct  # the same text, encrypted once
    assert (asked.customer.name, asked.subject) == ("王芳", "打印机卡纸")  # the request stays clear

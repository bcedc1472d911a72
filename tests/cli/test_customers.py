"""`desk customer find`: a customer is found by what an operator types the way intake recorded
it, whatever the form the request came in."""

from __future__ import annotations

import base64
import json
import secrets
import unicodedata

import pytest

from services import service_migrations
from shared.database import connect
from shared.deadletter import SEALED_FOR
from shared.keystore import KeyStore, MasterKey
from shared.personal import DataKeys
from shared.settings import Settings
from tests.cli.support import desk
from tests.support.services import migrated


@pytest.mark.asyncio
async def test_a_customer_is_found_by_an_address_number_or_id_typed_in_another_form(
    settings: Settings,
) -> None:
    secret = secrets.token_bytes(32)
    await migrated(settings, "intake", service_migrations("intake"))
    conn = await connect(settings.require_database_url())
    try:  # as intake makes them: from its contract's normalised values
        made = await KeyStore(MasterKey.of(secret)).subjects(
            conn, ["email:josé@example.com", "phone:+8613800001234", "id:C42"]
        )
    finally:
        await conn.close()
    operator = settings.replace(master_key=base64.urlsafe_b64encode(secret).decode())
    typed = {
        "email:josé@example.com": ["--email", unicodedata.normalize("NFD", " JOSÉ@Example.COM ")],
        "phone:+8613800001234": ["--phone", "+86 138-0000-1234"],
        "id:C42": ["--customer-id", " C42 "],
    }
    for identity, options in typed.items():
        found = await desk(operator, "customer", "find", *options)
        assert found.returncode == 0, found.stdout + found.stderr
        assert found.stdout.strip() == made[identity].ref, options

    both = await desk(
        operator, "customer", "find", "--customer-id", "C42", "--phone", "+86 13800001234"
    )
    assert both.stdout.splitlines() == [
        f"--customer-id {made['id:C42'].ref}",
        f"--phone {made['phone:+8613800001234'].ref}",
    ]
    half = await desk(operator, "customer", "find", "--customer-id", "C42", "--email", "x@y.zz")
    assert half.returncode == 0 and "--email not found" in half.stdout
    unknown = await desk(operator, "customer", "find", "--email", "nobody@example.com")
    assert unknown.returncode == 1 and "no such customer" in unknown.stdout + unknown.stderr
    bad = await desk(operator, "customer", "find", "--phone", "call me")
    assert bad.returncode == 1 and "--phone" in bad.stdout + bad.stderr


@pytest.mark.asyncio
async def test_an_export_holds_the_dead_letters_sealed_for_the_customer_opened(
    settings: Settings,
) -> None:
    """A request dead-lettered whole (intake) or an agent's reply about the customer (dispatch)
    is kept sealed under the customer: held about them, so in their export — opened, and
    "erased" once erased — and no one else's."""
    secret = secrets.token_bytes(32)
    for service in ("intake", "dispatch"):
        await migrated(settings, service, service_migrations(service))
    conn = await connect(settings.require_database_url())
    try:
        made = await KeyStore(MasterKey.of(secret)).subjects(
            conn, ["email:wang.fang@example.com", "email:other@example.com"]
        )
        letters = [
            ("intake", made["email:wang.fang@example.com"], '{"subject": "打印机卡纸"}'),
            ("dispatch", made["email:wang.fang@example.com"], '{"message": "已为您重启"}'),
            ("intake", made["email:other@example.com"], '{"subject": "someone else"}'),
        ]
        for offset, (service, subject, text) in enumerate(letters):
            assert subject.key is not None
            sealed = DataKeys({subject.ref: subject.key}).seal_bytes(subject.ref, text.encode())
            await conn.execute(
                f'INSERT INTO {service}.dead_letters (consumer, topic, partition, "offset", '
                "value, headers, reason, error, attempts) VALUES ('c', 't', 0, $1, $2, $3, "
                "'handler_failed', 'e', 3)",
                offset,
                json.dumps(sealed.as_json()).encode(),
                [["ce_type", "x"], [SEALED_FOR, subject.ref]],  # as DeadLetters writes them
            )
    finally:
        await conn.close()
    operator = settings.replace(master_key=base64.urlsafe_b64encode(secret).decode())
    ref = made["email:wang.fang@example.com"].ref

    exported = await desk(operator, "customer", "export", ref)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    held = json.loads(exported.stdout)["dead_letters"]
    assert sorted((h["service"], h["record"]) for h in held) == [
        ("dispatch", '{"message": "已为您重启"}'),
        ("intake", '{"subject": "打印机卡纸"}'),
    ]
    erased = await desk(operator, "customer", "erase", ref)
    assert erased.returncode == 0, erased.stdout + erased.stderr
    after = json.loads((await desk(operator, "customer", "export", ref)).stdout)["dead_letters"]
    assert [h["record"] for h in after] == ["erased", "erased"]

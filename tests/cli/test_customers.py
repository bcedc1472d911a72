"""`desk customer find`: a customer is found by what an operator types the way intake recorded
it, whatever the form the request came in."""

from __future__ import annotations

import base64
import secrets
import unicodedata

import pytest

from services import service_migrations
from shared.database import connect
from shared.keystore import KeyStore, MasterKey
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
    assert both.stdout.split() == [made["id:C42"].ref, made["phone:+8613800001234"].ref]
    unknown = await desk(operator, "customer", "find", "--email", "nobody@example.com")
    assert unknown.returncode == 1 and "no such customer" in unknown.stdout + unknown.stderr
    bad = await desk(operator, "customer", "find", "--phone", "call me")
    assert bad.returncode == 1 and "--phone" in bad.stdout + bad.stderr

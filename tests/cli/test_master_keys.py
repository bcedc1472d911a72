"""`desk master-key rotate` and `status`: the operator's rotation, end to end against the test's
database — customers found and their data opened before, during and after it."""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from services import service_migrations
from shared.database import connect
from shared.keystore import KeyStore, MasterKey
from shared.personal import DataKeys
from shared.settings import Settings
from tests.cli.support import desk
from tests.support.services import migrated

CUSTOMERS = [f"c{n}@example.com" for n in range(7)]


def new_key() -> tuple[str, MasterKey]:
    secret = secrets.token_bytes(32)
    return base64.urlsafe_b64encode(secret).decode(), MasterKey.of(secret)


@pytest.mark.asyncio
async def test_an_operator_rotates_the_master_key_and_drops_the_old_one(
    settings: Settings,
) -> None:
    (old_text, old), (new_text, new) = new_key(), new_key()
    await migrated(settings, "intake", service_migrations("intake"))
    conn = await connect(settings.require_database_url())
    try:
        made = await KeyStore(old).subjects(conn, [f"email:{c}" for c in CUSTOMERS])
        subjects = [made[f"email:{c}"] for c in CUSTOMERS]
        sealed = {
            s.ref: DataKeys({s.ref: s.key}).seal_text(s.ref, f"Wang Fang {n}")
            for n, s in enumerate(subjects)
        }
    finally:
        await conn.close()
    before = settings.replace(master_key=old_text)
    during = settings.replace(master_key=new_text, master_keys_retired=old_text)
    after = settings.replace(master_key=new_text)

    status = await desk(before, "master-key", "status")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["keys"] == {old.kid: 7}

    forgotten = await desk(after, "master-key", "rotate")  # the old key not given as retired
    assert forgotten.returncode == 1 and old.kid in forgotten.stdout, forgotten.stdout

    rotation = await desk(during, "master-key", "rotate", "--batch", "3")
    assert rotation.returncode == 0, rotation.stdout + rotation.stderr
    report = json.loads(rotation.stdout)
    assert (report["rewrapped"], report["batches"], report["rotated"]) == (7, 3, True)
    assert report["lookup_secret_rewrapped"] is True

    status = await desk(after, "master-key", "status")
    assert json.loads(status.stdout) == {
        "current": new.kid,
        "keys": {new.kid: 7},
        "erased": 0,
        "lookup_secret": new.kid,
        "rotated": True,
    }
    ref = made[f"email:{CUSTOMERS[4]}"].ref
    found = await desk(after, "customer", "find", "--email", CUSTOMERS[4])
    assert found.stdout.strip() == ref, found.stdout + found.stderr
    conn = await connect(settings.require_database_url())
    try:
        keys = await KeyStore(new).keys(conn, sealed)
    finally:
        await conn.close()
    assert DataKeys(keys).open_text(sealed[ref]) == "Wang Fang 4"

"""The key store (shared/keystore.py) on a real PostgreSQL: a subject per identity, keys wrapped
under the master key, erasure that destroys the key for good, and the readers' key grant."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from pydantic import BaseModel

from services import service_migrations
from shared.database import connect
from shared.keystore import KeyStore, MasterKey, MasterKeyError, identity_of, local_master_key
from shared.personal import (
    ERASED,
    DataKeys,
    PersonalText,
    Sealed,
    for_subject,
    keys_for,
    seal_pending,
)
from shared.settings import Settings
from tests.support.services import migrated

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def master() -> MasterKey:
    return MasterKey.of(secrets.token_bytes(32))


@pytest_asyncio.fixture
async def owner(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """The owner's connection to a database with intake and notify migrated."""
    await migrated(settings, "intake", service_migrations("intake"))
    await migrated(settings, "notify", service_migrations("notify"))
    conn = await connect(settings.require_database_url())
    yield conn
    await conn.close()


@pytest.mark.asyncio
async def test_one_subject_per_identity_with_a_stable_pseudonym(owner: asyncpg.Connection) -> None:
    store = KeyStore(master())
    first = await store.subjects(owner, ["email:a@example.com", "id:C-7"])
    again = await store.subjects(owner, ["email:a@example.com", "email:b@example.com"])

    assert again["email:a@example.com"] == first["email:a@example.com"]
    assert first["email:a@example.com"].ref != first["id:C-7"].ref
    assert again["email:b@example.com"].ref not in {s.ref for s in first.values()}
    assert await store.find(owner, "id:C-7") == first["id:C-7"].ref
    rows = await owner.fetch("SELECT * FROM intake.subject_keys")
    stored = b"".join(bytes(str(dict(r)), "utf-8") for r in rows)
    assert b"a@example.com" not in stored and b"C-7" not in stored
    key = first["id:C-7"].key
    assert key is not None and len(key) == 32
    assert base64.b64encode(key) not in stored


@pytest.mark.asyncio
async def test_keys_open_only_under_the_master_key_that_wrapped_them(
    owner: asyncpg.Connection,
) -> None:
    store = KeyStore(master())
    subject = (await store.subjects(owner, ["phone:+8613800001234"]))["phone:+8613800001234"]

    assert (await store.keys(owner, [subject.ref]))[subject.ref] == subject.key
    other = KeyStore(master())
    assert (await other.keys(owner, [subject.ref, "cust-unknown"])) == {
        subject.ref: None,
        "cust-unknown": None,
    }


@pytest.mark.asyncio
async def test_erasure_destroys_the_key_and_the_identity_becomes_a_new_subject(
    owner: asyncpg.Connection,
) -> None:
    store = KeyStore(master())
    subject = (await store.subjects(owner, ["email:a@example.com"]))["email:a@example.com"]
    assert subject.key is not None
    sealed = DataKeys({subject.ref: subject.key}).seal_text(subject.ref, "Wang Fang")

    assert await store.erase(owner, subject.ref, NOW)
    assert not await store.erase(owner, subject.ref, NOW)
    opened = (await keys_for(store, owner, [sealed])).open_text(sealed)
    assert opened is ERASED
    row = await owner.fetchrow("SELECT * FROM intake.subject_keys WHERE ref = $1", subject.ref)
    assert row is not None
    assert (row["wrapped_key"], row["lookup"], row["erased_at"]) == (None, None, NOW)
    assert await store.find(owner, "email:a@example.com") is None
    fresh = (await store.subjects(owner, ["email:a@example.com"]))["email:a@example.com"]
    assert fresh.ref != subject.ref


@pytest.mark.asyncio
async def test_a_key_erased_by_another_process_is_never_used_again_by_one_that_kept_it(
    owner: asyncpg.Connection,
) -> None:
    """Intake keeps unwrapped keys between batches; an erasure elsewhere (the desk's, or
    retention's) must still stop it from sealing or opening with the destroyed key."""
    secret = secrets.token_bytes(32)
    intake, desk = KeyStore(MasterKey.of(secret)), KeyStore(MasterKey.of(secret))
    identity = "email:a@example.com"
    before = (await intake.subjects(owner, [identity]))[identity]
    assert before.key is not None
    assert (await intake.subjects(owner, [identity]))[identity] == before  # kept: the same
    sealed = DataKeys({before.ref: before.key}).seal_text(before.ref, "Wang Fang")
    assert (await keys_for(intake, owner, [sealed])).open_text(sealed) == "Wang Fang"

    assert await desk.erase(owner, before.ref, NOW)

    after = (await intake.subjects(owner, [identity]))[identity]
    assert after.ref != before.ref and after.key not in (None, before.key)
    assert (await intake.keys(owner, [before.ref])) == {before.ref: None}
    assert (await keys_for(intake, owner, [sealed])).open_text(sealed) is ERASED
    with pytest.raises(KeyError):
        (await keys_for(intake, owner, [sealed])).seal_text(before.ref, "Wang Fang")


class Note(BaseModel):
    text: PersonalText
    number: str


@pytest.mark.asyncio
async def test_fields_bound_for_a_subject_are_sealed_as_appended_and_others_left_as_they_are(
    owner: asyncpg.Connection,
) -> None:
    store = KeyStore(master())
    subject = (await store.subjects(owner, ["id:C-9"]))["id:C-9"]
    sealed_already = DataKeys({subject.ref: subject.key}).seal(
        Note(text="x", number="1"), subject.ref
    )
    assert (await seal_pending(store, owner, [sealed_already]))[0] is sealed_already

    bound = for_subject(Note(text="Wang Fang", number="2"), subject.ref)
    (appended,) = await seal_pending(store, owner, [bound])

    assert isinstance(appended.text, Sealed) and appended.number == "2"
    assert "Wang Fang" not in appended.model_dump_json()
    assert (await keys_for(store, owner, [appended])).reveal(appended).text == "Wang Fang"


@pytest.mark.asyncio
async def test_anonymous_subjects_are_erasable_but_never_found(owner: asyncpg.Connection) -> None:
    store = KeyStore(master())
    subject = await store.anonymous(owner)
    assert (await store.keys(owner, [subject.ref]))[subject.ref] == subject.key
    assert await store.erase(owner, subject.ref, NOW)


@pytest.mark.asyncio
async def test_readers_are_granted_the_keys_and_only_to_read(
    owner: asyncpg.Connection, settings: Settings
) -> None:
    store = KeyStore(master())
    subject = (await store.subjects(owner, ["id:C-1"]))["id:C-1"]
    url = await migrated(settings, "notify", service_migrations("notify"))
    notify = await connect(url, schema="notify")
    try:
        assert (await store.keys(notify, [subject.ref]))[subject.ref] == subject.key
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await store.erase(notify, subject.ref, NOW)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await notify.execute("SELECT count(*) FROM intake.events")
    finally:
        await notify.close()


def test_identity_is_the_customer_id_else_the_normalised_address() -> None:
    assert identity_of("C-1", "a@example.com", None) == "id:C-1"
    assert identity_of(None, " A@Example.com", "+86138") == "email:a@example.com"
    assert identity_of(None, None, "+8613800001234") == "phone:+8613800001234"
    assert identity_of(None, None, None) is None


def test_master_key_from_settings_or_the_local_file(tmp_path: Path) -> None:
    secret = secrets.token_bytes(32)
    text = base64.urlsafe_b64encode(secret).decode()
    given = Settings(master_key=text, local_mode=False)
    assert MasterKey.from_settings(given).kid == MasterKey.of(secret).kid

    with pytest.raises(MasterKeyError, match="no master key"):
        MasterKey.from_settings(Settings(local_mode=False))
    local = Settings(local_mode=True, data_dir=tmp_path)
    made = MasterKey.from_settings(local)
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
    assert MasterKey.from_settings(local).kid == made.kid
    assert (
        local_master_key(tmp_path / "master.key").read_text()
        == (tmp_path / "master.key").read_text()
    )
    with pytest.raises(MasterKeyError):
        MasterKey.of(b"\x00" * 32)
    with pytest.raises(MasterKeyError):
        MasterKey.of(b"short")

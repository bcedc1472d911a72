"""The key store (shared/keystore.py) on a real PostgreSQL: a subject per identity, keys wrapped
under the master key, erasure that destroys the key for good, and the readers' key grant."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel

from services import service_migrations
from services.intake.app import build as intake
from shared.database import connect
from shared.keystore import (
    LOOKUP_SECRET,
    KeyStore,
    MasterKey,
    MasterKeyError,
    MasterKeys,
    identity_of,
    local_master_key,
)
from shared.personal import (
    ERASED,
    DataKeys,
    PersonalText,
    Sealed,
    _sealer,
    for_subject,
    keys_for,
    seal_pending,
)
from shared.settings import Settings
from tests.support.services import migrated
from tests.support.waiting import eventually

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
async def test_a_batch_of_new_subjects_gets_keys_and_pseudonyms_of_their_own(
    owner: asyncpg.Connection,
) -> None:
    """A batch's new subjects are made from one draw of random bytes: none may share a key, a
    pseudonym or a wrapping nonce with another, nor a key with its own wrapping."""
    key = master()
    identities = [f"email:c{n}@example.com" for n in range(60)]
    made = await KeyStore(key).subjects(owner, identities)

    keys = [s.key for s in made.values()]
    assert len({s.ref for s in made.values()}) == len({k for k in keys}) == 60
    assert all(k is not None and len(k) == 32 for k in keys)
    rows = await owner.fetch("SELECT ref, wrapped_key FROM intake.subject_keys")
    nonces = {bytes(r["wrapped_key"][:12]) for r in rows}
    assert len(nonces) == 60
    assert not any(
        bytes(r["wrapped_key"][:12]) in made_key for r in rows for made_key in keys if made_key
    )
    reread = await KeyStore(key).keys(owner, [s.ref for s in made.values()])
    assert reread == {s.ref: s.key for s in made.values()}


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
async def test_a_key_made_here_is_the_one_stored_and_read_again_without_unwrapping(
    owner: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The maker keeps the key it made (no unwrapping its own row back); another process reads
    the very same key from the table. Keys kept are dropped least recently used first."""
    monkeypatch.setattr("shared.keystore.UNWRAPPED_KEPT", 2)
    secret = secrets.token_bytes(32)
    unwrapped: list[str] = []

    class Counting(MasterKeys):
        def unwrap(self, ref: str, kid: str, wrapped: bytes) -> bytes:
            if ref != LOOKUP_SECRET:  # unwrapped once per process, not a data key
                unwrapped.append(ref)
            return super().unwrap(ref, kid, wrapped)

    maker = KeyStore(Counting.of(MasterKey.of(secret)))
    a, b, c = "email:a@example.com", "email:b@example.com", "email:c@example.com"
    made = await maker.subjects(owner, [a, b])
    assert unwrapped == []
    elsewhere = await KeyStore(MasterKey.of(secret)).subjects(owner, [a, b])
    assert elsewhere == made

    await maker.subjects(owner, [a])  # a is now the more recently used
    await maker.subjects(owner, [c])  # made: b, the least recently used, is dropped
    assert (await maker.subjects(owner, [a]))[a] == made[a]
    assert unwrapped == []
    assert (await maker.subjects(owner, [b]))[b] == made[b]
    assert unwrapped == [made[b].ref]


@pytest.mark.asyncio
async def test_a_key_under_a_master_key_not_configured_is_an_error_never_erased(
    owner: asyncpg.Connection,
) -> None:
    """A wrong or missing master key must not pass for a mass erasure: the row names the
    master key it is under, and the error names it too."""
    first = master()
    store = KeyStore(first)
    subject = (await store.subjects(owner, ["phone:+8613800001234"]))["phone:+8613800001234"]
    erased = await store.anonymous(owner)
    assert await store.erase(owner, erased.ref, NOW)

    assert (await store.keys(owner, [subject.ref]))[subject.ref] == subject.key
    other = KeyStore(master())
    assert await other.keys(owner, [erased.ref, "cust-unknown"]) == {
        erased.ref: None,
        "cust-unknown": None,
    }
    with pytest.raises(MasterKeyError, match=first.kid):
        await other.keys(owner, [subject.ref])
    with pytest.raises(MasterKeyError, match=first.kid):
        await other.find(owner, "phone:+8613800001234")  # the lookup secret is under it too
    await owner.execute(
        "UPDATE intake.subject_keys SET wrapped_key = $2 WHERE ref = $1",
        subject.ref,
        b"\x00" * 60,
    )
    with pytest.raises(MasterKeyError, match="damaged"):
        await KeyStore(first).keys(owner, [subject.ref])


@pytest.mark.asyncio
async def test_the_master_keys_in_use_but_not_given_are_found_without_reading_every_row(
    owner: asyncpg.Connection,
) -> None:
    old, new = master(), master()
    store = KeyStore(old)
    kept = (await store.subjects(owner, ["email:kept@example.com"]))["email:kept@example.com"]
    assert await KeyStore(new).unconfigured(owner) == [old.kid]
    assert await KeyStore(MasterKeys.of(new, old)).unconfigured(owner) == []
    assert await store.unconfigured(owner) == []

    # Only erased keys left under the old master key: still its lookup secret.
    assert await store.erase(owner, kept.ref, NOW)
    assert await KeyStore(new).unconfigured(owner) == [old.kid]
    await owner.execute("DELETE FROM intake.lookup_secret")
    assert await KeyStore(new).unconfigured(owner) == []


@pytest.mark.asyncio
async def test_a_service_given_the_wrong_master_key_refuses_to_start(
    owner: asyncpg.Connection, settings: Settings
) -> None:
    """Started anyway, intake would fail every request of a customer met before — and keep
    those requests, in clear, as dead letters."""
    old = secrets.token_bytes(32)
    await KeyStore(MasterKey.of(old)).subjects(owner, ["email:met@example.com"])
    given = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    service = intake(settings.replace(master_key=given))
    with pytest.raises(RuntimeError, match=f"intake refuses to start: .*{MasterKey.of(old).kid}"):
        await service.app.start()


@pytest.mark.asyncio
async def test_lookups_are_made_with_a_secret_kept_apart_from_the_master_key(
    owner: asyncpg.Connection,
) -> None:
    """Made on first use exactly as lookups were made before it was kept apart (HKDF of the
    master key): a deployment's existing lookups all still match."""
    secret = secrets.token_bytes(32)
    store = KeyStore(MasterKey.of(secret))
    subject = (await store.subjects(owner, ["id:C-7"]))["id:C-7"]

    derived = HKDF(hashes.SHA256(), 32, None, b"servicedesk lookup").derive(secret)
    lookup = await owner.fetchval(
        "SELECT lookup FROM intake.subject_keys WHERE ref = $1", subject.ref
    )
    assert lookup == hmac.digest(derived, b"id:C-7", hashlib.sha256)
    row = await owner.fetchrow("SELECT * FROM intake.lookup_secret")
    assert row is not None and row["master_kid"] == store.master.kid
    assert derived not in bytes(row["wrapped_secret"])
    assert await KeyStore(MasterKey.of(secret)).find(owner, "id:C-7") == subject.ref


@pytest.mark.asyncio
async def test_processes_making_the_lookup_secret_at_once_make_one(
    owner: asyncpg.Connection, settings: Settings
) -> None:
    secret = secrets.token_bytes(32)
    other = await connect(settings.require_database_url())

    async def made_by_the_other() -> tuple[str, bytes]:
        async with other.transaction():
            return await KeyStore(MasterKey.of(secret)).lookup_secret(other)

    try:
        async with owner.transaction():
            mine = await KeyStore(MasterKey.of(secret)).lookup_secret(owner)
            theirs = asyncio.create_task(made_by_the_other())
            # The other maker's INSERT waits on this transaction's row (a lock, seen by the
            # server), then reads the row this one made.
            await eventually(
                lambda: owner.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                    other.get_server_pid(),
                ),
                timeout=10,
                interval=0.01,
                what="the other maker waiting on this one's row",
            )
            assert not theirs.done()
        assert await theirs == mine
    finally:
        await other.close()
    assert await owner.fetchval("SELECT count(*) FROM intake.lookup_secret") == 1


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


async def _stays_pending(task: asyncio.Task[object], what: str) -> None:
    """``task`` is still waiting after a moment (for a lock: nothing else could hold it)."""
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done, what


@pytest.mark.asyncio
async def test_an_erasure_waits_for_a_batch_that_met_the_subject_and_a_batch_for_the_erasure(
    settings: Settings, owner: asyncpg.Connection
) -> None:
    """A batch meeting its customers and an erasure do not overlap: what a batch seals under a
    key is committed before that key is destroyed (so retention, reading next, sees the new
    ticket that keeps it), and a batch begun during an erasure meets the customer afresh
    rather than with the key being destroyed."""
    secret = secrets.token_bytes(32)
    intake, retention = KeyStore(MasterKey.of(secret)), KeyStore(MasterKey.of(secret))
    identity = "email:a@example.com"
    known = (await intake.subjects(owner, [identity]))[identity]
    batch = await connect(settings.require_database_url())
    try:
        async with batch.transaction():
            assert (await intake.subjects(batch, [identity]))[identity] == known

            async def erase() -> bool:
                async with owner.transaction():
                    return await retention.erase(owner, known.ref, NOW)

            erasing = asyncio.ensure_future(erase())
            await _stays_pending(erasing, "the erasure waits for the batch in flight")
        assert await erasing

        async with owner.transaction():
            await retention.hold_for_erasing(owner)
            meeting = asyncio.ensure_future(intake.subjects(batch, [identity]))
            await _stays_pending(meeting, "a batch waits for the erasure in progress")
        met = (await meeting)[identity]
    finally:
        await batch.close()
    assert met.ref != known.ref and met.key not in (None, known.key), "met afresh, after it"


@pytest.mark.asyncio
async def test_the_ciphers_kept_from_batch_to_batch_go_with_the_keys(
    owner: asyncpg.Connection,
) -> None:
    """No destroyed key stays in the process in any form: the sealers kept for the next batches
    (each holds its key's cipher) are dropped whenever a key store drops its keys — an erasure
    elsewhere noticed by the next batch, or this process's own."""
    secret = secrets.token_bytes(32)
    intake, desk = KeyStore(MasterKey.of(secret)), KeyStore(MasterKey.of(secret))
    one, two = "email:a@example.com", "email:b@example.com"
    subjects = await intake.subjects(owner, [one, two])
    DataKeys({s.ref: s.key for s in subjects.values()}).seal_text(subjects[one].ref, "Wang Fang")
    assert _sealer.cache_info().currsize > 0

    assert await desk.erase(owner, subjects[one].ref, NOW)
    await intake.subjects(owner, [two])  # the next batch: the erasure count moved
    assert _sealer.cache_info().currsize == 0

    DataKeys(await intake.keys(owner, [subjects[two].ref])).seal_text(subjects[two].ref, "Li Lei")
    assert _sealer.cache_info().currsize > 0
    assert await intake.erase(owner, subjects[two].ref, NOW)
    assert _sealer.cache_info().currsize == 0

    # A reader (notify, the console) asks keys by pseudonym: one erased since it opened with it
    # goes as soon as it reads the row again.
    three = (await intake.subjects(owner, ["email:c@example.com"]))["email:c@example.com"]
    reader = KeyStore(MasterKey.of(secret))
    DataKeys(await reader.keys(owner, [three.ref])).seal_text(three.ref, "Zhao Lei")
    await owner.execute(  # another process's erasure (this one's clears them itself)
        "UPDATE intake.subject_keys SET wrapped_key = NULL, lookup = NULL, erased_at = now() "
        "WHERE ref = $1",
        three.ref,
    )
    assert _sealer.cache_info().currsize > 0
    assert await reader.keys(owner, [three.ref]) == {three.ref: None}
    assert _sealer.cache_info().currsize == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "by_hand",
    [
        "UPDATE intake.subject_keys SET wrapped_key = NULL, lookup = NULL, erased_at = now() "
        "WHERE ref = $1",
        "UPDATE intake.subject_keys SET lookup = NULL WHERE ref = $1",
        "DELETE FROM intake.subject_keys WHERE ref = $1",
        "TRUNCATE intake.subject_keys",
    ],
    ids=["erased", "unlinked", "deleted", "truncated"],
)
async def test_a_kept_subject_is_forgotten_however_its_row_was_erased(
    owner: asyncpg.Connection, by_hand: str
) -> None:
    """Intake keeps the subjects it met and reads only the erasure count for them; a trigger
    moves the count whatever erases a row — SQL typed by an operator too — so a kept key is
    never used after its row is gone. Closing a subject's ticket moves nothing."""
    store = KeyStore(master())
    identity = "email:kept@example.com"
    before = (await store.subjects(owner, [identity]))[identity]
    assert (await store.subjects(owner, [identity]))[identity] == before  # read once, then kept
    count = "SELECT erased FROM intake.subject_erasures"
    erased = await owner.fetchval(count)
    await owner.execute(
        "UPDATE intake.subject_keys SET closed_at = now() WHERE ref = $1", before.ref
    )
    assert await owner.fetchval(count) == erased
    assert (await store.subjects(owner, [identity]))[identity] == before

    await owner.execute(by_hand, *([before.ref] if "$1" in by_hand else []))

    assert await owner.fetchval(count) > erased
    after = (await store.subjects(owner, [identity]))[identity]
    assert after.ref != before.ref and after.key != before.key
    row = await owner.fetchrow(
        "SELECT wrapped_key FROM intake.subject_keys WHERE ref = $1", after.ref
    )
    assert row is not None and row[0] is not None


@pytest.mark.asyncio
async def test_a_subject_made_in_a_transaction_that_rolled_back_is_not_kept(
    owner: asyncpg.Connection,
) -> None:
    """A batch that fails rolls its new subjects back: the next one must not seal under a key
    that no row holds (nothing could ever open it) — even when the failed batch had read its
    own new row back before it failed."""
    store = KeyStore(master())
    identity = "email:rolled-back@example.com"
    batch = owner.transaction()
    await batch.start()
    async with owner.transaction():  # a savepoint, as a batch isolating a message makes
        lost = (await store.subjects(owner, [identity]))[identity]
    # The batch meets the customer again (a refused request of theirs): its own row, read.
    assert (await store.subjects(owner, [identity]))[identity] == lost
    await batch.rollback()  # the batch failed

    again = (await store.subjects(owner, [identity]))[identity]
    kept = (await store.subjects(owner, [identity]))[identity]

    assert again.ref != lost.ref and kept == again
    assert await store.keys(owner, [again.ref]) == {again.ref: again.key}
    assert await store.keys(owner, [lost.ref]) == {lost.ref: None}


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


def test_retired_master_keys_from_settings_and_their_file(tmp_path: Path) -> None:
    current, old, older = (secrets.token_bytes(32) for _ in range(3))
    b64 = [base64.urlsafe_b64encode(k).decode().rstrip("=") for k in (current, old, older)]
    (tmp_path / "retired").write_text(f"{b64[2]}\n\n")
    ring = MasterKeys.from_settings(
        Settings(
            master_key=b64[0],
            master_keys_retired=f"{b64[1]}, {b64[0]}",
            master_keys_retired_file=tmp_path / "retired",
        )
    )
    assert ring.current.kid == MasterKey.of(current).kid
    assert set(ring.retired) == {MasterKey.of(old).kid, MasterKey.of(older).kid}
    assert ring.named(MasterKey.of(old).kid) == ring.retired[MasterKey.of(old).kid]
    with pytest.raises(MasterKeyError, match="mk-nowhere"):
        ring.named("mk-nowhere")
    with pytest.raises(MasterKeyError, match="DESK_MASTER_KEYS_RETIRED"):
        MasterKeys.from_settings(Settings(master_key=b64[0], master_keys_retired="not!base64"))
    with pytest.raises(MasterKeyError, match="cannot read"):
        MasterKeys.from_settings(
            Settings(master_key=b64[0], master_keys_retired_file=tmp_path / "missing")
        )

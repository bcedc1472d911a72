"""Master-key rotation (shared/rotation.py) on a real PostgreSQL: every data key rewrapped under
the new master key with its bytes unchanged, lookups kept, erased rows left alone, resumable,
and never in the way of services making subjects meanwhile."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
import pytest_asyncio

from services import service_migrations
from shared.database import connect
from shared.keystore import KeyStore, MasterKey, MasterKeyError, MasterKeys
from shared.rotation import census, rotate_keys, rotate_lookup_secret
from shared.settings import Settings
from tests.support.services import migrated

NOW = datetime(2026, 12, 1, tzinfo=UTC)
IDENTITIES = [f"email:c{n}@example.com" for n in range(5)]


def master() -> MasterKey:
    return MasterKey.of(secrets.token_bytes(32))


@pytest_asyncio.fixture
async def owner(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """The owner's connection to a database with intake migrated."""
    await migrated(settings, "intake", service_migrations("intake"))
    conn = await connect(settings.require_database_url())
    yield conn
    await conn.close()


async def rotated(store: KeyStore, conn: asyncpg.Connection, batch: int = 2) -> int:
    """A whole rotation, as `desk master-key rotate` runs it: rows rewrapped."""
    await rotate_lookup_secret(store, conn)
    return sum([n async for n in rotate_keys(store, conn, batch)])


async def finished(rotation: AsyncIterator[int]) -> int:
    return sum([n async for n in rotation])


async def kids(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT ref, master_kid FROM intake.subject_keys")
    return {r["ref"]: r["master_kid"] for r in rows}


@pytest.mark.asyncio
async def test_every_key_is_rewrapped_with_its_bytes_and_lookups_kept(
    owner: asyncpg.Connection,
) -> None:
    old, new = master(), master()
    before = await KeyStore(old).subjects(owner, IDENTITIES)
    refused = await KeyStore(old).anonymous(owner)
    gone = before[IDENTITIES[0]].ref
    assert await KeyStore(old).erase(owner, gone, NOW)
    erased_row = await owner.fetchrow("SELECT * FROM intake.subject_keys WHERE ref = $1", gone)
    refs = [s.ref for s in before.values()] + [refused.ref]

    assert await rotated(KeyStore(MasterKeys.of(new, old)), owner) == 5

    assert set((await kids(owner)).values()) == {new.kid, old.kid}
    assert await owner.fetchrow("SELECT * FROM intake.subject_keys WHERE ref = $1", gone) == (
        erased_row
    )
    report = await census(KeyStore(new), owner)
    assert (report.keys, report.erased, report.lookup_secret) == ({new.kid: 5}, 1, new.kid)
    assert report.rotated
    dropped = KeyStore(new)  # the retired key removed from the ring: everything still reads
    assert await dropped.keys(owner, refs) == {
        **{s.ref: s.key for s in before.values()},
        gone: None,
        refused.ref: refused.key,
    }
    for identity in IDENTITIES[1:]:
        assert await dropped.find(owner, identity) == before[identity].ref
    assert await dropped.subjects(owner, IDENTITIES[1:]) == {i: before[i] for i in IDENTITIES[1:]}
    assert await dropped.find(owner, IDENTITIES[0]) is None
    with pytest.raises(MasterKeyError, match=new.kid):
        await KeyStore(old).keys(owner, refs)


@pytest.mark.asyncio
async def test_a_deployment_older_than_the_lookup_secret_keeps_its_lookups(
    owner: asyncpg.Connection,
) -> None:
    """Its lookups were made under the old master key's derivation; rotating with the new key
    already current must still make the lookup secret from the old one."""
    old, new = master(), master()
    before = await KeyStore(old).subjects(owner, IDENTITIES)
    await owner.execute("DELETE FROM intake.lookup_secret")  # as before the table existed

    await rotated(KeyStore(MasterKeys.of(new, old)), owner)

    found = {i: await KeyStore(new).find(owner, i) for i in IDENTITIES}
    assert found == {i: s.ref for i, s in before.items()}


@pytest.mark.asyncio
async def test_an_interrupted_rotation_is_finished_by_running_it_again(
    owner: asyncpg.Connection,
) -> None:
    old, new = master(), master()
    await KeyStore(old).subjects(owner, IDENTITIES)
    ring = KeyStore(MasterKeys.of(new, old))
    await rotate_lookup_secret(ring, owner)
    async for done in rotate_keys(ring, owner, batch=2):
        assert done == 2
        break  # the operator's session dies after the first batch

    assert (await census(ring, owner)).keys == {new.kid: 2, old.kid: 3}
    assert await rotated(ring, owner) == 3
    assert await rotated(ring, owner) == 0
    assert set((await kids(owner)).values()) == {new.kid}


@pytest.mark.asyncio
async def test_services_making_subjects_meanwhile_are_never_in_the_way(
    owner: asyncpg.Connection, settings: Settings
) -> None:
    """A subject made during a rotation is under the new key; a row a service holds locked is
    skipped, not waited for, and taken by the next run."""
    old, new = master(), master()
    before = await KeyStore(old).subjects(owner, IDENTITIES)
    ring = KeyStore(MasterKeys.of(new, old))
    service = await connect(settings.require_database_url())
    try:
        held = before[IDENTITIES[3]].ref
        async with service.transaction():
            await service.execute(
                "SELECT 1 FROM intake.subject_keys WHERE ref = $1 FOR UPDATE", held
            )
            await rotate_lookup_secret(ring, owner)
            rotation = rotate_keys(ring, owner, batch=2)
            assert await anext(rotation) == 2
            made = await KeyStore(MasterKeys.of(new, old)).subjects(service, ["id:C-new"])
            rest = await asyncio.wait_for(finished(rotation), timeout=10)
        assert rest == 2
    finally:
        await service.close()

    found = await kids(owner)
    assert found[made["id:C-new"].ref] == new.kid
    assert found[held] == old.kid and not (await census(ring, owner)).rotated
    assert await rotated(ring, owner) == 1
    assert (await census(ring, owner)).rotated


@pytest.mark.asyncio
async def test_two_rotations_at_once_share_the_rows(
    owner: asyncpg.Connection, settings: Settings
) -> None:
    old, new = master(), master()
    made = await KeyStore(old).subjects(owner, [f"id:C-{n}" for n in range(40)])
    other = await connect(settings.require_database_url())
    try:
        counts = await asyncio.gather(
            rotated(KeyStore(MasterKeys.of(new, old)), owner, batch=3),
            rotated(KeyStore(MasterKeys.of(new, old)), other, batch=3),
        )
    finally:
        await other.close()
    assert sum(counts) == 40
    assert await KeyStore(new).keys(owner, [s.ref for s in made.values()]) == {
        s.ref: s.key for s in made.values()
    }


@pytest.mark.asyncio
async def test_a_row_under_a_master_key_not_configured_stops_the_rotation_by_name(
    owner: asyncpg.Connection,
) -> None:
    old, new = master(), master()
    made = await KeyStore(old).subjects(owner, IDENTITIES)
    wrapped = await owner.fetchval(
        "SELECT wrapped_key FROM intake.subject_keys WHERE ref = $1", made[IDENTITIES[0]].ref
    )

    with pytest.raises(MasterKeyError, match=old.kid):
        await rotated(KeyStore(new), owner)  # the old key was not added as retired

    assert set((await kids(owner)).values()) == {old.kid}
    assert (
        await owner.fetchval(
            "SELECT wrapped_key FROM intake.subject_keys WHERE ref = $1", made[IDENTITIES[0]].ref
        )
        == wrapped
    )

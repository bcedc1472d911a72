"""Migrations: ordered, recorded, applied once, never silently rewritten."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from shared.database import connect
from shared.migrations import Migration, MigrationError, kernel_migrations, migrate
from shared.settings import Settings


@pytest.mark.asyncio
async def test_migrations_apply_once_and_in_order(settings: Settings) -> None:
    extra = [
        Migration("svc", 1, "first", "CREATE TABLE things (id int)"),
        Migration("svc", 2, "second", "ALTER TABLE things ADD COLUMN name text"),
    ]
    conn = await connect(settings.require_database_url())
    try:
        applied = await migrate(conn, "svc_a", [*kernel_migrations(), *extra])
        assert applied == [
            "kernel/001_event_store",
            "kernel/003_dead_letter_publishing",
            "svc/001_first",
            "svc/002_second",
        ]
        assert await migrate(conn, "svc_a", [*kernel_migrations(), *extra]) == []
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'svc_a' AND table_name = 'things' ORDER BY ordinal_position"
        )
        assert [c[0] for c in columns] == ["id", "name"]
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_an_edited_applied_migration_is_refused(settings: Settings) -> None:
    first = Migration("svc", 1, "first", "CREATE TABLE things (id int)")
    conn = await connect(settings.require_database_url())
    try:
        await migrate(conn, "svc_b", [first])
        with pytest.raises(MigrationError, match="has changed since"):
            await migrate(conn, "svc_b", [replace(first, sql="CREATE TABLE things (id bigint)")])
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_concurrent_migrators_do_not_race(settings: Settings) -> None:
    url = settings.require_database_url()
    conns = [await connect(url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c, "svc_c", kernel_migrations()) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(len(r) for r in results) == [0, 0, 0, len(kernel_migrations())]

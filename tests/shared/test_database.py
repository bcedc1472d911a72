"""The pool: a released connection carries nothing to its next user, without a reset query."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.database import create_pool
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

SESSION_STATE = re.compile(
    r"pg_(?:try_)?advisory_lock(?:_shared)?\s*\(|\bLISTEN\b|add_listener\(|set_config\s*\("
    r"|WITH HOLD|\(\s*f?[\"']\s*SET\s+(?!LOCAL\b)",
)
"""What would outlive a transaction on a connection: session advisory locks, LISTEN, session
settings, holdable cursors. The pool no longer resets them (``shared.database._keep_session``)."""

OWN_CONNECTIONS = {"shared/relay.py", "shared/local/postgres.py", "services/console/stream.py"}
"""Code that holds connections of its own, never the pool's (the relay's leader lock and
listener, the console's listener for its live stream, the embedded server's settings); and
``services/cli``, the operators' tools."""


def test_no_code_on_the_pools_connections_leaves_session_state() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for folder in ("shared", "services")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if str(path.relative_to(ROOT)) not in OWN_CONNECTIONS
        and not str(path.relative_to(ROOT)).startswith("services/cli/")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SESSION_STATE.search(line) and not line.lstrip().startswith("#")
    ]
    assert found == []


def test_the_guard_sees_session_state() -> None:
    for statement in (
        'await conn.fetchval("SELECT pg_advisory_lock(1)")',
        'await conn.execute("LISTEN changes")',
        "await conn.execute('SET search_path = x')",
        'await conn.execute("DECLARE c CURSOR WITH HOLD FOR SELECT 1")',
    ):
        assert SESSION_STATE.search(statement), statement
    for statement in (
        'await conn.execute("SET LOCAL search_path = x")',
        'await conn.execute("UPDATE t SET a = 1")',
        '"SET a = excluded.a "',
        'await conn.execute("SELECT pg_advisory_xact_lock(1)")',
    ):
        assert not SESSION_STATE.search(statement), statement


@pytest.mark.asyncio
async def test_a_released_connection_leaves_no_transaction_to_the_next_user(
    settings: Settings,
) -> None:
    pool = await create_pool(settings, schema="public", application="test")
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS pool_probe (n int)")
            await conn.execute("BEGIN")  # left open, as a failed caller might leave it
            await conn.execute("INSERT INTO pool_probe VALUES (1)")
            backend = await conn.fetchval("SELECT pg_backend_pid()")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == backend  # the same one
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM pool_probe") == 0
    finally:
        await pool.close()

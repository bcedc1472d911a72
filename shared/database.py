"""PostgreSQL connections: one pool per service, bound to the service's own schema.

Each service owns a schema (``intake``, ``dispatch``, ...). Its pool sets ``search_path`` to that
schema, so a service's SQL never names it and can never touch another service's tables by
accident; the few cross-schema readers (``desk ticket show``) qualify names explicitly.
"""

from __future__ import annotations

import asyncio
import json
import re
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shared.settings import Settings

Connection = asyncpg.Connection | PoolConnectionProxy
"""A database connection, whether opened on its own or borrowed from a pool."""

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def identifier(name: str) -> str:
    """Check that a schema or table name is a plain identifier we may format into SQL."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns arrive as Python objects; envelopes are written as text we made ourselves.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A pooled connection's reset between two users: asyncpg's own part only (an open
    transaction rolled back, listeners dropped). Its default also runs ``SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` — a round trip per release,
    i.e. per consumer batch — for session state nothing leaves on a pooled connection here:
    locks are transaction locks, settings ``SET LOCAL``, and the relay listens and holds its
    leader lock on a connection of its own (:func:`connect`); ``tests/shared/test_database.py``
    keeps it so."""


async def connect(
    url: str, *, schema: str | None = None, durable_commits: bool = True
) -> asyncpg.Connection:
    """A single connection (tools, the relay's listener).

    ``durable_commits=False`` lets commits return before their WAL reaches disk: for writes a
    crash may lose without harm, like the relay's checkpoint (losing it only republishes).
    """
    settings = {"search_path": identifier(schema)} if schema else {}
    if not durable_commits:
        settings["synchronous_commit"] = "off"
    conn: asyncpg.Connection = await asyncpg.connect(url, server_settings=settings)
    await _init_connection(conn)
    return conn


async def create_pool(
    settings: Settings, *, schema: str, application: str, url: str | None = None
) -> asyncpg.Pool:
    """A pool on ``url`` (default: the settings' ``DATABASE_URL``) bound to ``schema``."""
    pool = await asyncpg.create_pool(
        url or settings.require_database_url(),
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        command_timeout=settings.db_command_timeout.total_seconds(),
        server_settings={"search_path": identifier(schema), "application_name": application},
        init=_init_connection,
        reset=_keep_session,
    )
    if pool is None:  # pragma: no cover - asyncpg returns None only when not awaited
        raise RuntimeError("pool creation failed")
    return pool


async def wait_for_database(url: str, timeout: float = 30.0) -> None:
    """Return once PostgreSQL accepts connections at ``url``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            conn = await asyncpg.connect(url, timeout=2)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)
        else:
            await conn.close()
            return


def with_database(url: str, database: str) -> str:
    """The same server URL, pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


async def create_database(admin_url: str, name: str, *, template: str | None = None) -> bool:
    """Create a database unless it exists; return True if created now."""
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        clause = f" TEMPLATE {identifier(template)}" if template else ""
        try:
            await conn.execute(f"CREATE DATABASE {identifier(name)}{clause}")
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {identifier(name)} WITH (FORCE)")
    finally:
        await conn.close()

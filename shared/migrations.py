"""Versioned SQL migrations, applied per service schema by ``desk migrate`` as the owner role.

A schema gets the kernel's migrations (``shared/sql``: event store, consumer tracking,
checkpoints, dead letters) and then its service's own (``services/<name>/sql``). Files are named
``NNN_what.sql`` and applied in order, each set in one transaction under an advisory lock, so two
instances starting at once do not race. An applied migration whose file later changed is an
error: history is never rewritten, a new file is added instead. A service never migrates: it
runs as a role that may create nothing, and at start it checks that its schema is migrated
(:func:`check_migrated`), refusing to start otherwise.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

from shared.database import Connection, identifier
from shared.logging import get_logger

log = get_logger(__name__)
_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    source: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load(source: str, package: str, folder: str = "sql") -> list[Migration]:
    """Read ``NNN_name.sql`` files shipped in a package folder."""
    root: Traversable = files(package).joinpath(folder)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(source, int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{package}/{folder}: two migrations share a version number")
    return found


def kernel_migrations() -> list[Migration]:
    return load("kernel", "shared")


class MigrationError(RuntimeError):
    pass


async def migrate(conn: Connection, schema: str, migrations: list[Migration]) -> list[str]:
    """Bring ``schema`` up to date; return the names of the migrations applied now."""
    schema = identifier(schema)
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"SET LOCAL search_path = {schema}")
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                source     text        NOT NULL,
                version    integer     NOT NULL,
                name       text        NOT NULL,
                checksum   text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (source, version)
            )
            """
        )
        rows = await conn.fetch("SELECT source, version, name, checksum FROM schema_migrations")
        done = {(r["source"], r["version"]): r for r in rows}
        for migration in migrations:
            previous = done.get((migration.source, migration.version))
            if previous is not None:
                if previous["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"{schema}: applied migration {migration.source}/"
                        f"{migration.version:03d}_{previous['name']} has changed since; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (source, version, name, checksum) "
                "VALUES ($1, $2, $3, $4)",
                migration.source,
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(f"{migration.source}/{migration.version:03d}_{migration.name}")
    if applied_now:
        log.info("migrations applied", schema=schema, migrations=applied_now)
    return applied_now


async def check_migrated(conn: Connection, schema: str, migrations: list[Migration]) -> None:
    """Raise :class:`MigrationError` unless every migration is applied to ``schema``, unchanged."""
    schema = identifier(schema)
    table = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.schema_migrations")
    rows = (
        await conn.fetch(f"SELECT source, version, checksum FROM {schema}.schema_migrations")
        if table is not None
        else []
    )
    done = {(r["source"], r["version"]): r["checksum"] for r in rows}
    missing = [
        f"{m.source}/{m.version:03d}_{m.name}"
        for m in migrations
        if done.get((m.source, m.version)) != m.checksum
    ]
    if missing:
        raise MigrationError(
            f"schema {schema} is not migrated ({', '.join(missing)} missing or changed): "
            "run `desk migrate` as the owner role first"
        )

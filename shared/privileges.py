"""Least privilege in PostgreSQL: an owner role migrates, each service runs as its own role.

* ``desk_owner`` owns the database and every service schema; ``desk migrate`` connects as it,
  applies the migrations and grants each service its rights (:func:`grant_service`), at every
  run, so the rights always match the tables.
* ``desk_<service>`` is the service's login role: ``USAGE`` on its own schema and nothing on any
  other; ``SELECT, INSERT, UPDATE, DELETE, TRUNCATE`` on its tables, except the event store's
  ``events`` (``SELECT, INSERT`` and ``MAINTAIN``, which allows the ordering lock of an append and
  of a projection's catch-up — PostgreSQL 17 or newer — and nothing that changes a row),
  ``policy_history`` (``SELECT, INSERT``: a service records each policy version it puts in force,
  never rewrites that record) and ``schema_migrations`` (``SELECT``: a service checks it is
  migrated, never migrates); ``EXECUTE`` on its functions. So it may purge its old claims
  (``processed_messages``) and record, publish and mark its dead letters (``dead_letters``), as
  the kernel does at run time. The services that open customers' sealed fields also get
  ``SELECT`` on intake's ``subject_keys`` (:func:`grant_key_readers`). It
  creates nothing: no ``CREATE`` on any schema, no ``TEMP``.
* The event store is append-only for every role, the owner too: a trigger refuses ``UPDATE``,
  ``DELETE`` and ``TRUNCATE`` of ``events`` (``shared/sql/002_append_only.sql``).

Roles are cluster-wide: a superuser creates them once per cluster (:func:`create_roles`: ``desk
up`` on the embedded server, the test harness, the compose deployment's init script); rights are
per database and granted by the owner.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from shared.database import Connection, identifier
from shared.keystore import KEY_HOLDER
from shared.migrations import Migration, migrate

OWNER_ROLE = "desk_owner"


def service_role(service: str) -> str:
    """The login role a service runs as."""
    return identifier(f"desk_{service}")


def role_url(url: str, role: str, password: str | None = None) -> str:
    """The same server and database, connecting as ``role``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = quote(role, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


async def create_roles(
    conn: Connection, services: Iterable[str], passwords: Mapping[str, str] | None = None
) -> None:
    """Create the owner role and each service's role if missing (as a superuser).

    ``passwords`` maps role names to passwords (the embedded server trusts its Unix socket and
    needs none). Two callers at once are fine: a role created meanwhile is left as it is.
    """
    for role in (OWNER_ROLE, *(service_role(s) for s in services)):
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
        if exists:
            continue
        password = (passwords or {}).get(role)
        clause = " PASSWORD " + _literal(password) if password else ""
        with contextlib.suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
            await conn.execute(
                f"CREATE ROLE {identifier(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                f"NOINHERIT{clause}"
            )


async def hand_over(conn: Connection, database: str, schemas: Iterable[str]) -> None:
    """Give the database, and schemas a previous version created as someone else, to the
    owner role (as a superuser; what ``desk up`` does to an existing local data directory)."""
    await conn.execute(f"ALTER DATABASE {identifier(database)} OWNER TO {OWNER_ROLE}")
    for schema in schemas:
        owner = await conn.fetchval(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1", schema
        )
        if owner is None or owner == OWNER_ROLE:
            continue
        await conn.execute(_HAND_OVER.replace("{schema}", identifier(schema)))


_HAND_OVER = f"""
DO $$
DECLARE r record;
BEGIN
    EXECUTE 'ALTER SCHEMA {{schema}} OWNER TO {OWNER_ROLE}';
    FOR r IN SELECT c.oid::regclass AS name FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = '{{schema}}' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid
                               AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO {OWNER_ROLE}', r.name);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = '{{schema}}'
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO {OWNER_ROLE}', r.name);
    END LOOP;
END $$;
"""


async def grant_service(conn: Connection, schema: str, role: str) -> None:
    """Give ``role`` exactly its rights on ``schema`` (as the owner, after migrating it)."""
    s, r = identifier(schema), identifier(role)
    database = identifier(await conn.fetchval("SELECT current_database()"))
    async with conn.transaction():
        for statement in (
            f"REVOKE ALL ON DATABASE {database} FROM PUBLIC",
            f"GRANT CONNECT ON DATABASE {database} TO {r}",
            f"REVOKE ALL ON SCHEMA {s} FROM PUBLIC",
            f"GRANT USAGE ON SCHEMA {s} TO {r}",
            f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM PUBLIC, {r}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {s} TO {r}",
            f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {s}.schema_migrations FROM {r}",
            f"REVOKE UPDATE, DELETE, TRUNCATE ON {s}.events FROM {r}",
            f"GRANT MAINTAIN ON {s}.events TO {r}",
            f"REVOKE UPDATE, DELETE, TRUNCATE ON {s}.policy_history FROM {r}",
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM PUBLIC",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
            f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {s} FROM PUBLIC",
            f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {r}",
        ):
            await conn.execute(statement)


async def provision(conn: Connection, service: str, migrations: list[Migration]) -> list[str]:
    """What ``desk migrate`` does for one service, as the owner: migrate its schema, then grant
    its role its rights. Returns the migrations applied now."""
    applied = await migrate(conn, service, migrations)
    role = service_role(service)
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
        raise LookupError(
            f"role {role} does not exist: a superuser creates it once per cluster "
            "(`desk up` does on the embedded server; see deploy/postgres/init-roles.sh)"
        )
    await grant_service(conn, service, role)
    await grant_key_readers(conn)
    return applied


KEY_READERS = ("dispatch", "notify", "console")
"""Services granted the key store (:mod:`shared.keystore`): they open customers' sealed fields
(notify to send, the console to show) or seal what people write about them (dispatch)."""


async def grant_key_readers(conn: Connection) -> None:
    """Give each reader's role ``SELECT`` on the key holder's ``subject_keys`` — the key grant,
    useless without the master key — once both exist (any order of ``desk migrate``)."""
    holder = identifier(KEY_HOLDER)
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{holder}.subject_keys"):
        return
    for reader in KEY_READERS:
        role = service_role(reader)
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await conn.execute(f"GRANT USAGE ON SCHEMA {holder} TO {role}")
            await conn.execute(f"GRANT SELECT ON {holder}.subject_keys TO {role}")


async def role_problems(conn: Connection, schema: str) -> list[str]:
    """Why this connection must not run a service on ``schema``: a superuser, or the schema's
    owner, could change its event store and create objects at will."""
    row = await conn.fetchrow(
        "SELECT current_user AS role, r.rolsuper AS superuser, "
        "(SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1) AS owner "
        "FROM pg_roles r WHERE r.rolname = current_user",
        schema,
    )
    assert row is not None
    problems = []
    if row["superuser"]:
        problems.append(f"connected as superuser {row['role']}")
    if row["owner"] == row["role"]:
        problems.append(f"connected as {row['role']}, the owner of schema {schema}")
    return problems


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"

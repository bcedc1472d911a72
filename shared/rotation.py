"""Master-key rotation: every data key, and the lookup secret, rewrapped under the current master
key, so a retired one (compromised, or simply old) can be dropped.

Only the wrapping changes: each customer's data key keeps its bytes, so no sealed field, event or
backup is touched, and the lookup secret keeps every identity's lookup. Rows are rewrapped in
batches, each its own transaction, locking only the rows it takes and skipping those another
transaction holds (``FOR UPDATE SKIP LOCKED``): services making subjects meanwhile wait for one
batch at most, and two rotations share the work instead of fighting over it. A rotation stopped
half-way is simply run again — it takes the rows whose ``master_kid`` is not the current key's.
Erased rows hold no key and are left as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from shared.database import Connection
from shared.keystore import LOOKUP_SECRET, KeyStore

ROTATION_BATCH = 500
"""Rows a rotation rewraps in one transaction."""


@dataclass(frozen=True, slots=True)
class KeyCensus:
    """Which master key wraps what: an operator drops a retired key once nothing is under it."""

    current: str
    """The current master key's kid."""
    keys: dict[str, int]
    """Data keys held (not erased), by the kid of the master key wrapping them."""
    erased: int
    lookup_secret: str | None
    """The kid wrapping the lookup secret (None: not made yet, no lookup made since it exists)."""

    @property
    def rotated(self) -> bool:
        """Nothing is left under a retired master key."""
        return set(self.keys) <= {self.current} and self.lookup_secret in (None, self.current)

    def as_json(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "keys": self.keys,
            "erased": self.erased,
            "lookup_secret": self.lookup_secret,
            "rotated": self.rotated,
        }


async def census(store: KeyStore, conn: Connection) -> KeyCensus:
    rows = await conn.fetch(
        "SELECT master_kid, count(*) FILTER (WHERE wrapped_key IS NOT NULL) AS held, "
        f"count(*) FILTER (WHERE wrapped_key IS NULL) AS erased FROM {store.table} "
        "GROUP BY master_kid ORDER BY master_kid"
    )
    lookup = await conn.fetchval(f"SELECT master_kid FROM {store.lookup_table}")
    return KeyCensus(
        current=store.master.kid,
        keys={r["master_kid"]: r["held"] for r in rows if r["held"]},
        erased=sum(r["erased"] for r in rows),
        lookup_secret=lookup,
    )


async def rotate_lookup_secret(store: KeyStore, conn: Connection) -> bool:
    """Rewrap the lookup secret under the current master key (made first if missing, before any
    row leaves the key its lookups were derived from); True when it was rewrapped now."""
    current = store.master
    async with conn.transaction():
        await store.lookup_secret(conn)
        row = await conn.fetchrow(
            f"SELECT master_kid, wrapped_secret FROM {store.lookup_table} FOR UPDATE"
        )
        assert row is not None
        if row["master_kid"] == current.kid:
            return False
        secret = store.ring.unwrap(LOOKUP_SECRET, row["master_kid"], row["wrapped_secret"])
        await conn.execute(
            f"UPDATE {store.lookup_table} SET master_kid = $1, wrapped_secret = $2",
            current.kid,
            current.wrap(LOOKUP_SECRET, secret),
        )
        return True


async def rotate_keys(
    store: KeyStore, conn: Connection, batch: int = ROTATION_BATCH
) -> AsyncIterator[int]:
    """Rewrap the data keys not under the current master key, one committed batch at a time
    (yields how many each rewrapped). One pass in pseudonym order: a row locked by another
    transaction meanwhile is left for the next run (:func:`census` tells)."""
    current = store.master
    after = ""
    while True:
        async with conn.transaction():
            rows = await conn.fetch(
                f"SELECT ref, master_kid, wrapped_key FROM {store.table} "
                "WHERE ref > $1 AND master_kid <> $2 AND wrapped_key IS NOT NULL "
                "ORDER BY ref LIMIT $3 FOR UPDATE SKIP LOCKED",
                after,
                current.kid,
                batch,
            )
            if not rows:
                return
            refs = [r["ref"] for r in rows]
            wrapped = [
                current.wrap(
                    r["ref"], store.ring.unwrap(r["ref"], r["master_kid"], r["wrapped_key"])
                )
                for r in rows
            ]
            await conn.execute(
                f"UPDATE {store.table} AS k SET master_kid = $3, wrapped_key = u.w "
                "FROM unnest($1::text[], $2::bytea[]) AS u(r, w) WHERE k.ref = u.r",
                refs,
                wrapped,
                current.kid,
            )
        after = refs[-1]
        yield len(rows)

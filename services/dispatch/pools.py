"""Which dispatch batches may run side by side: those whose groups share no agent.

An agent's capacity is shared by every group they belong to; a group's queue and round-robin
cursor by every ticket routed to it. So what dispatch serialises is the *pool*: groups joined,
directly or through other groups, by the agents they share (with the shipped policy: front line
with customer care, PC hardware with printing, every other group alone). A batch locks, inside
its transaction, the pools of every group its messages may route into or free room in
(:mod:`services.dispatch.reach`), loads the loads and queues *after* taking them, and so decides
exactly as if it were alone — whichever instance or consumer runs it.

Why advisory locks per pool rather than ticket partitions owned by an instance: capacity and
queues cross ticket partitions (one agent takes tickets of every partition), so partition
ownership would still need a lock per agent; and a pool lock needs no coordination between
instances beyond PostgreSQL, which every batch talks to anyway.

Deadlocks are avoided by one order: the desk lock first — shared by every batch, exclusive for
the one that switches policy versions (it moves tickets between any groups) — then the pools by
key, ascending. A batch takes more pools only when a ticket it names moved to another pool
between its first read and its locks (see :meth:`Locks.widen`); that is the one path that can
meet another batch in the opposite order, and PostgreSQL's deadlock detector then fails one of
the two, which the consumer retries.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b

from services.policy.dispatch import DirectoryPolicy
from shared.database import Connection


def lock_key(name: str) -> int:
    """A stable 64-bit advisory-lock key for a name (the same in every instance)."""
    return int.from_bytes(blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


DESK_KEY = lock_key("dispatch.desk")


def pools(directory: DirectoryPolicy) -> dict[str, str]:
    """Group -> its pool's name (the smallest group id in it)."""
    parent = {g.id: g.id for g in directory.groups}

    def root(group: str) -> str:
        while parent[group] != group:
            parent[group] = parent[parent[group]]
            group = parent[group]
        return group

    for agent in directory.agents:
        first, *others = agent.groups
        for other in others:
            a, b = sorted((root(first), root(other)))
            parent[b] = a
    return {group: root(group) for group in parent}


class Locks:
    """The locks one dispatch transaction holds: the whole desk, or some pools."""

    def __init__(self, conn: Connection, pool_of: dict[str, str]) -> None:
        self.conn = conn
        self.pool_of = pool_of
        self.whole = False
        self.held: set[str] = set()
        """Pools held (meaningless once ``whole``)."""

    async def take(self, groups: Iterable[str] | None) -> None:
        """Take the desk lock and the pools of ``groups`` (None: the whole desk, exclusively)."""
        if groups is None:
            self.whole = True
            await self.conn.execute(f"SELECT pg_advisory_xact_lock({DESK_KEY})")
            return
        await self.conn.execute(f"SELECT pg_advisory_xact_lock_shared({DESK_KEY})")
        await self.widen(groups)

    async def widen(self, groups: Iterable[str]) -> None:
        """Also hold the pools of ``groups`` (by ascending key, in one round trip)."""
        if self.whole:
            return
        wanted = {self.pool_of[g] for g in groups if g in self.pool_of} - self.held
        if not wanted:
            return
        keys = sorted(lock_key(f"dispatch.pool:{pool}") for pool in wanted)
        await self.conn.execute(";".join(f"SELECT pg_advisory_xact_lock({k})" for k in keys))
        self.held |= wanted

    def groups(self) -> set[str] | None:
        """The groups this transaction may change (None: every group)."""
        if self.whole:
            return None
        return {g for g, pool in self.pool_of.items() if pool in self.held}

"""The key store of crypto-shredding: a data key per data subject, wrapped under a master key.

A customer's personal fields are sealed with their own data key (:mod:`shared.personal`).
Destroying that key erases the fields everywhere at once — event stores, Kafka history, dead
letters, backups — without rewriting an event. The keys live in the ``subject_keys`` table of
intake's schema (intake meets every data subject first); the services that need clear text are
granted ``SELECT`` on it (:func:`shared.privileges.grant_key_readers`) and hold the master key.

The master key comes from settings (``DESK_MASTER_KEY`` or ``DESK_MASTER_KEY_FILE``); in local
mode without either, ``<data dir>/master.key`` is made once. Retired master keys
(``DESK_MASTER_KEYS_RETIRED``) only open rows still wrapped under them: each row names its
master key (``master_kid``), and ``desk master-key rotate`` (:mod:`shared.rotation`) rewraps
them under the current one. A row under a master key not configured here is an error, never
"erased": a wrong master key must not pass for a mass erasure.

The table's ``lookup`` (an HMAC of the identity) finds a subject again without the table holding
who it is. Its secret lives beside the keys (``lookup_secret``), wrapped under the master key
like them, so a rotation keeps every lookup: identities are not stored, so lost lookups could
never be made again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from asyncpg import Record
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.database import Connection, identifier
from shared.keys import WELL_KNOWN_SECRETS
from shared.settings import Settings

KEY_HOLDER = "intake"
"""The schema whose ``subject_keys`` table holds the data keys."""
KEY_BYTES = 32
NONCE_BYTES = 12
REF_BYTES = 8
"""Random bytes of a pseudonym (``cust-`` and their hex)."""
UNWRAPPED_KEPT = 4_096
"""Subjects a :class:`KeyStore` keeps for the next batches (repeat customers) in each of its
caches — lookups, subjects met, unwrapped keys —, the least recently used dropped first:
≈ 0.85 KB a subject in all, so ≈ 3.5 MB (16,384 took 14 MB, and a process's memory grew with
the customers it met until it was full). A population of customers writing again that is
larger than this pays a lookup and an unwrapping, a few microseconds, on each request.
The caches are :class:`~collections.OrderedDict`: dropping a plain dict's first entry
(``next(iter(d))``) scans the holes earlier drops left, 3 µs a drop at this size against
0.3."""
_FORGETTING: list[Callable[[], None]] = []


def when_keys_forgotten(forget: Callable[[], None]) -> None:
    """Call ``forget`` whenever a key store drops the keys it holds because one may have been
    destroyed (an erasure anywhere, or this process's own): what is made from keys and kept
    elsewhere (:mod:`shared.personal`'s ciphers) goes with them."""
    _FORGETTING.append(forget)


def _forgotten() -> None:
    for forget in _FORGETTING:
        forget()


LOOKUP_SECRET = "lookup secret"
"""What the lookup secret's wrapping is bound to, as a data key's is to its pseudonym."""


class MasterKeyError(ValueError):
    """No usable master key, and why."""


@dataclass(frozen=True, slots=True)
class MasterKey:
    """The key that wraps every data key. ``kid`` names it (a hash), so a row wrapped under
    another master key is recognised instead of failing to decrypt."""

    kid: str
    _wrap: AESGCM
    derived_lookup: bytes
    """The lookup secret as derived from this key before it was kept apart: the one a
    deployment's lookups were made with, so the stored secret starts as it."""

    @classmethod
    def of(cls, secret: bytes) -> MasterKey:
        if len(secret) != KEY_BYTES:
            raise MasterKeyError(f"the master key must be {KEY_BYTES} bytes, not {len(secret)}")
        if secret.strip(secret[:1]) == b"" or secret in WELL_KNOWN_SECRETS:
            raise MasterKeyError("the master key is a repeated-byte or well-known secret")
        kid = "mk-" + hashlib.sha256(b"servicedesk master key id" + secret).hexdigest()[:12]
        return cls(kid, AESGCM(_derive(secret, b"wrap")), _derive(secret, b"lookup"))

    @classmethod
    def from_settings(cls, settings: Settings) -> MasterKey:
        """``DESK_MASTER_KEY``, else ``DESK_MASTER_KEY_FILE``, else (local mode only) the local
        file in the data directory, made if missing."""
        if settings.master_key is not None:
            return cls.of(_unb64(settings.master_key.get_secret_value(), "DESK_MASTER_KEY"))
        path = settings.master_key_file
        if path is None:
            if not settings.local_mode:
                raise MasterKeyError("no master key (set DESK_MASTER_KEY or DESK_MASTER_KEY_FILE)")
            path = local_master_key(settings.data_dir / "master.key")
        try:
            text = path.read_text("utf-8").strip()
        except OSError as error:
            raise MasterKeyError(f"cannot read the master key file {path}: {error}") from None
        return cls.of(_unb64(text, str(path)))

    def wrap(self, ref: str, data_key: bytes, nonce: bytes | None = None) -> bytes:
        """``data_key`` wrapped for ``ref``; ``nonce``, if given, must be fresh random bytes
        never used before (a batch of new subjects draws theirs at once)."""
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        return nonce + self._wrap.encrypt(nonce, data_key, ref.encode())

    def unwrap(self, ref: str, wrapped: bytes) -> bytes | None:
        """The data key, or None when it was not wrapped for ``ref`` under this master key."""
        try:
            return self._wrap.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], ref.encode())
        except (InvalidTag, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class MasterKeys:
    """The current master key, which wraps everything new, and the retired ones, kept only to
    open what is still wrapped under them until a rotation has rewrapped it."""

    current: MasterKey
    retired: Mapping[str, MasterKey] = field(default_factory=dict)

    @classmethod
    def of(cls, current: MasterKey, *retired: MasterKey) -> MasterKeys:
        return cls(current, {k.kid: k for k in retired if k.kid != current.kid})

    @classmethod
    def from_settings(cls, settings: Settings) -> MasterKeys:
        """The current key (:meth:`MasterKey.from_settings`) and ``DESK_MASTER_KEYS_RETIRED``'s
        and ``DESK_MASTER_KEYS_RETIRED_FILE``'s."""
        texts: list[tuple[str, str]] = []
        if settings.master_keys_retired is not None:
            given = settings.master_keys_retired.get_secret_value().split(",")
            texts += [("DESK_MASTER_KEYS_RETIRED", t) for t in given if t.strip()]
        path = settings.master_keys_retired_file
        if path is not None:
            try:
                lines = path.read_text("utf-8").splitlines()
            except OSError as error:
                raise MasterKeyError(
                    f"cannot read the retired master keys {path}: {error}"
                ) from None
            texts += [(str(path), t) for t in lines if t.strip()]
        retired = [MasterKey.of(_unb64(text, source)) for source, text in texts]
        return cls.of(MasterKey.from_settings(settings), *retired)

    def named(self, kid: str) -> MasterKey:
        if kid == self.current.kid:
            return self.current
        key = self.retired.get(kid)
        if key is None:
            raise MasterKeyError(
                f"data keys are wrapped under master key {kid}, which is not configured here: "
                "set it as DESK_MASTER_KEY, or add it to DESK_MASTER_KEYS_RETIRED"
            )
        return key

    def unwrap(self, ref: str, kid: str, wrapped: bytes) -> bytes:
        """The key wrapped for ``ref`` under the master key ``kid``; an error, not None, when
        it does not open: the row was not erased, so reading it as erased would be a lie."""
        key = self.named(kid).unwrap(ref, wrapped)
        if key is None:
            raise MasterKeyError(f"{ref}: does not open under master key {kid} (a damaged row)")
        return key


def local_master_key(path: Path) -> Path:
    """The master key file of a local run: made once (mode 0600), never rewritten — a new
    master key would make every customer's data unreadable. Two processes racing make one."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside, then linked into place: a reader never sees a half-written key.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(_b64(secrets.token_bytes(KEY_BYTES)) + "\n")
    try:
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink()
    return path


@dataclass(frozen=True, slots=True)
class SubjectKey:
    """A data subject's pseudonym and data key (None once erased: the key is gone)."""

    ref: str
    key: bytes | None


class KeyStore:
    """The ``subject_keys`` table of the key holder's schema, read and written through the
    master key. Methods take the caller's connection: a key is made in the transaction that
    records the first event sealed with it.

    Given settings, the master key is read when first needed (a service checks it at start:
    building a service, e.g. for its AsyncAPI document, needs none)."""

    def __init__(self, master: MasterKeys | MasterKey | Settings, schema: str = KEY_HOLDER) -> None:
        self._ring = MasterKeys.of(master) if isinstance(master, MasterKey) else master
        self.table = f"{identifier(schema)}.subject_keys"
        self.lookup_table = f"{identifier(schema)}.lookup_secret"
        self.erasures_table = f"{identifier(schema)}.subject_erasures"
        self._erasing = f"erasing:{schema}"
        """The advisory lock (hashed) that serialises erasures with the batches meeting this
        schema's subjects: shared by those, exclusive for these."""
        self._lookup: hmac.HMAC | None = None
        """The lookup secret's HMAC, keyed once: each identity's is a copy (half the cost of
        ``hmac.digest``, and intake looks up every request's customer)."""
        self._looked_up: OrderedDict[str, bytes] = OrderedDict()
        """Lookups made before, by identity (a repeat customer's request skips its HMAC, a
        third of finding a known customer), the first made dropped first (an HMAC is cheap to
        make again; keeping them in use order would cost every hit), forgotten with
        :attr:`_met`: after an erasure anywhere, this process holds no identity it met before
        it."""
        self._unwrapped: OrderedDict[str, tuple[bytes, bytes]] = OrderedDict()
        """Data keys already unwrapped, by pseudonym, with the wrapped key as the table held it:
        a repeat customer's batch skips the unwrapping, never the read of the row — a row
        wrapped anew does not match, and an erased one holds no wrapped key at all."""
        self._met: OrderedDict[bytes, SubjectKey] = OrderedDict()
        """Subjects read from the table before, by lookup, the least recently used first: a
        repeat customer's batch reads the erasure count instead of their row (a third of what
        finding a known customer cost intake). Only committed rows are kept — a subject made in
        a transaction that may still roll back is not — and all are forgotten when the count
        moves, since an erasure anywhere may have been one of theirs."""
        self._erasures: int | None = None
        """``subject_erasures.erased`` when :attr:`_met` was last checked against it."""
        self._unsettled: OrderedDict[bytes, str] = OrderedDict()
        """Subjects this process made, by lookup, with the (top-level) transaction that made
        them, until read by another: a transaction reads its own rows before it commits, and
        keeping one that then rolls back would seal later requests under a key no row holds."""

    @property
    def ring(self) -> MasterKeys:
        if isinstance(self._ring, Settings):
            self._ring = MasterKeys.from_settings(self._ring)
        return self._ring

    @property
    def master(self) -> MasterKey:
        """The current master key: it wraps every key made now."""
        return self.ring.current

    async def lookup_secret(self, conn: Connection) -> tuple[str, bytes]:
        """The lookup secret and the kid of the master key it is wrapped under; made on first
        use as the lookups were made before it was kept apart — derived from the master key
        that wrapped the rows holding lookups (the current one if none) — so they all still
        match. Racing makers insert the same secret; the first row wins."""
        row = await conn.fetchrow(f"SELECT master_kid, wrapped_secret FROM {self.lookup_table}")
        if row is None:
            made_under = await conn.fetchval(
                f"SELECT master_kid FROM {self.table} WHERE lookup IS NOT NULL LIMIT 1"
            )
            secret = self.ring.named(made_under or self.master.kid).derived_lookup
            await conn.execute(
                f"INSERT INTO {self.lookup_table} (master_kid, wrapped_secret) VALUES ($1, $2) "
                "ON CONFLICT DO NOTHING",
                self.master.kid,
                self.master.wrap(LOOKUP_SECRET, secret),
            )
            row = await conn.fetchrow(f"SELECT master_kid, wrapped_secret FROM {self.lookup_table}")
            assert row is not None
        return row[0], self.ring.unwrap(LOOKUP_SECRET, row[0], row[1])

    async def unconfigured(self, conn: Connection) -> list[str]:
        """The master keys something here is wrapped under that this process was not given
        (the lookup secret's only where its table can be read: the key holder's). A service
        with one refuses to start: otherwise intake would fail every request from a customer
        met before — and keep those records in clear as dead letters — until someone noticed.
        One index probe per master key in use (a loose scan), not a read of the table."""
        try:
            async with conn.transaction():  # a savepoint in the caller's, if any
                return await self._unconfigured(conn)
        except (asyncpg.UndefinedTableError, asyncpg.InsufficientPrivilegeError):
            return []  # no key store here yet, or not granted yet: nothing to open either

    async def _unconfigured(self, conn: Connection) -> list[str]:
        kids = await conn.fetch(
            "WITH RECURSIVE kids(kid) AS ("
            f" (SELECT master_kid FROM {self.table} WHERE wrapped_key IS NOT NULL"
            "  ORDER BY master_kid LIMIT 1)"
            f" UNION ALL SELECT (SELECT master_kid FROM {self.table}"
            "  WHERE wrapped_key IS NOT NULL AND master_kid > kids.kid"
            "  ORDER BY master_kid LIMIT 1) FROM kids WHERE kids.kid IS NOT NULL"
            ") SELECT kid FROM kids WHERE kid IS NOT NULL"
        )
        in_use = {row[0] for row in kids}
        with contextlib.suppress(asyncpg.UndefinedTableError, asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():  # a refusal must not abort the caller's transaction
                kid = await conn.fetchval(f"SELECT master_kid FROM {self.lookup_table}")
            in_use |= {kid} if kid is not None else set()
        ring = self.ring
        return sorted(k for k in in_use if k != ring.current.kid and k not in ring.retired)

    async def lookups(self, conn: Connection, identities: Iterable[str]) -> dict[str, bytes]:
        """Each identity's HMAC: equal identities, equal lookups; the identity is not in it."""
        if self._lookup is None:
            _, secret = await self.lookup_secret(conn)
            self._lookup = hmac.new(secret, digestmod=hashlib.sha256)
        lookups = {}
        made = self._looked_up
        for identity in identities:
            lookup = made.get(identity)
            if lookup is None:
                mac = self._lookup.copy()
                mac.update(identity.encode())
                lookup = mac.digest()
                if len(made) >= UNWRAPPED_KEPT:
                    made.popitem(last=False)  # the first made
                made[identity] = lookup
            lookups[identity] = lookup
        return lookups

    async def subjects(self, conn: Connection, identities: Iterable[str]) -> dict[str, SubjectKey]:
        """The subject of each identity (a customer id or a normalised contact address), made
        with a fresh pseudonym and data key when first met. Serialised with erasures
        (:meth:`hold_for_erasing`) until the caller's transaction ends: what it seals under
        these keys is committed before any of them is destroyed, or it meets the subject as
        erased (and so makes a new one)."""
        wanted = set(identities)
        if not wanted:
            return {}
        await self.hold_for_meeting(conn)
        lookups = await self.lookups(conn, wanted)
        found = await self._met_or_read(conn, list(lookups.values()))
        missing = [lookup for lookup in lookups.values() if lookup not in found]
        if missing:
            # Made here: each key is known in clear, so it is kept as unwrapped already.
            refs, keys, wrapped = self._made(len(missing))
            kept = await conn.fetch(
                f"INSERT INTO {self.table} (ref, lookup, master_kid, wrapped_key) "
                "SELECT r, l, $4, w FROM unnest($1::text[], $2::bytea[], $3::bytea[]) "
                "AS u(r, l, w) "
                "ON CONFLICT (lookup) DO NOTHING RETURNING lookup, pg_current_xact_id()::text",
                refs,
                missing,
                wrapped,
                self.master.kid,
            )
            inserted = {row[0] for row in kept}
            for row in kept:
                if len(self._unsettled) >= UNWRAPPED_KEPT:
                    self._unsettled.popitem(last=False)
                self._unsettled[row[0]] = row[1]
            for lookup, ref, key, wrap in zip(missing, refs, keys, wrapped, strict=True):
                if lookup in inserted:
                    found[lookup] = SubjectKey(ref, key)
                    self._keep(ref, wrap, key)
            raced = [lookup for lookup in missing if lookup not in found]
            if raced:  # made meanwhile by another transaction: theirs it is
                found.update(await self._by_lookup(conn, raced))
        return {identity: found[lookup] for identity, lookup in lookups.items()}

    def _made(self, count: int) -> tuple[list[str], list[bytes], list[bytes]]:
        """``count`` new subjects' pseudonyms, data keys and wrapped keys, from one draw of
        random bytes (three system calls a subject otherwise, a third of a batch's customers
        being new ones in the demo's traffic)."""
        size = REF_BYTES + KEY_BYTES + NONCE_BYTES
        block = os.urandom(count * size)
        refs, keys, wrapped = [], [], []
        for at in range(0, count * size, size):
            key_at = at + REF_BYTES
            ref = _REF_PREFIX + block[at:key_at].hex()
            key = block[key_at : key_at + KEY_BYTES]
            refs.append(ref)
            keys.append(key)
            wrapped.append(self.master.wrap(ref, key, block[key_at + KEY_BYTES : at + size]))
        return refs, keys, wrapped

    async def _met_or_read(self, conn: Connection, lookups: list[bytes]) -> dict[bytes, SubjectKey]:
        """The subjects of ``lookups`` already in the table: those met before as kept, the others
        read, in one statement that also reads the erasure count. A count that moved since the
        last batch forgets every kept subject and key, and reads them all again. Like reading the
        rows, this sees erasures committed before the statement; none commits while the batch
        is in flight (:meth:`subjects` holds them off)."""
        met = self._met
        unknown = [lookup for lookup in lookups if lookup not in met]
        rows = await conn.fetch(
            f"SELECT e.erased, pg_current_xact_id_if_assigned()::text, "
            f"k.lookup, k.ref, k.master_kid, k.wrapped_key FROM {self.erasures_table} e "
            f"LEFT JOIN {self.table} k ON k.lookup = ANY($1::bytea[])",
            unknown,
        )
        erased = rows[0][0] if rows else None
        if erased is None or erased != self._erasures:
            met.clear()
            self._looked_up.clear()
            self._unwrapped.clear()  # nor does this process hold a destroyed key any longer
            _forgotten()
            self._erasures = erased
            if erased is None:  # no count to check against: nothing is kept
                return await self._by_lookup(conn, lookups)
            if len(unknown) < len(lookups):
                return await self._met_or_read(conn, lookups)
        found: dict[bytes, SubjectKey] = {}
        for lookup in lookups:
            if (subject := met.get(lookup)) is not None:
                met.move_to_end(lookup)  # now the most recently used
                found[lookup] = subject
        this_transaction = rows[0][1]  # None until it writes: then it made nothing either
        read = self._subjects(row[2:] for row in rows if row[2] is not None)
        for lookup, subject in read.items():
            found[lookup] = subject
            if (maker := self._unsettled.get(lookup)) is not None:
                if maker == this_transaction:
                    continue  # made by this very transaction, not committed yet
                del self._unsettled[lookup]  # seen by another transaction: committed
            if subject.key is not None:
                if len(met) >= UNWRAPPED_KEPT:
                    met.popitem(last=False)  # the least recently used
                met[lookup] = subject
        return found

    async def anonymous(self, conn: Connection) -> SubjectKey:
        """A subject of its own for data whose owner is unknown (a refused request's bytes):
        erasable by its pseudonym, found by no identity."""
        ref, key = new_ref(), secrets.token_bytes(KEY_BYTES)
        await conn.execute(
            f"INSERT INTO {self.table} (ref, master_kid, wrapped_key) VALUES ($1, $2, $3)",
            ref,
            self.master.kid,
            self.master.wrap(ref, key),
        )
        return SubjectKey(ref, key)

    async def keys(self, conn: Connection, refs: Iterable[str]) -> dict[str, bytes | None]:
        """The data key of each pseudonym: None when erased or unknown."""
        wanted = sorted(set(refs))
        if not wanted:
            return {}
        rows = await conn.fetch(
            f"SELECT ref, master_kid, wrapped_key FROM {self.table} WHERE ref = ANY($1::text[])",
            wanted,
        )
        keys: dict[str, bytes | None] = dict.fromkeys(wanted)
        for row in rows:
            keys[row[0]] = self._unwrap(row[0], row[1], row[2])
            if row[2] is None and self._drop(row[0]):
                _forgotten()  # erased since this process unwrapped it: nothing made of it stays
        return keys

    async def hold_for_meeting(self, conn: Connection) -> None:
        """Keep erasures off until the caller's transaction ends (:meth:`subjects` takes it; so
        does a caller that opens a customer's data to seal it again, before it opens it: an
        erasure between the two would have the erased data sealed anew under a new key). Its
        own statement: a statement's snapshot is taken before it waits for a lock, so what is
        read next must be read by a later one to see an erasure it waited for."""
        await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))", self._erasing)

    async def hold_for_erasing(self, conn: Connection) -> None:
        """Wait for every transaction that has met subjects (:meth:`subjects`) to end, and keep
        new ones from meeting any until the caller's transaction ends. Retention takes it before
        it reads whose tickets are all closed: a returning customer's batch in flight has then
        committed the new ticket that keeps the key, or meets them only after the erasure."""
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self._erasing)

    async def erase(self, conn: Connection, ref: str, at: datetime) -> bool:
        """Destroy the subject's data key (and the lookup that found it: the same customer
        writing again becomes a new subject). False when it was unknown or already erased.
        Serialised with the batches meeting subjects (:meth:`hold_for_erasing`)."""
        await self.hold_for_erasing(conn)
        erased = await conn.fetchval(
            f"UPDATE {self.table} SET wrapped_key = NULL, lookup = NULL, erased_at = $2 "
            "WHERE ref = $1 AND erased_at IS NULL RETURNING ref",
            ref,
            at,
        )
        self._drop(ref)  # not even this process holds it any longer
        for lookup in [k for k, subject in self._met.items() if subject.ref == ref]:
            del self._met[lookup]
        self._looked_up.clear()  # nor the identity that found it (which one it was is not kept)
        _forgotten()
        return erased is not None

    def _drop(self, ref: str) -> bool:
        """Forget ``ref``'s unwrapped key; True if this process held it."""
        return self._unwrapped.pop(ref, None) is not None

    async def find(self, conn: Connection, identity: str) -> str | None:
        """The pseudonym of an identity already met and not erased (operators' look-up)."""
        lookup = (await self.lookups(conn, [identity]))[identity]
        row = await conn.fetchval(f"SELECT ref FROM {self.table} WHERE lookup = $1", lookup)
        return str(row) if row is not None else None

    async def _by_lookup(self, conn: Connection, lookups: list[bytes]) -> dict[bytes, SubjectKey]:
        rows = await conn.fetch(
            f"SELECT lookup, ref, master_kid, wrapped_key FROM {self.table} "
            "WHERE lookup = ANY($1::bytea[])",
            lookups,
        )
        return self._subjects(rows)

    def _subjects(self, rows: Iterable[Record | tuple[Any, ...]]) -> dict[bytes, SubjectKey]:
        return {r[0]: SubjectKey(r[1], self._unwrap(r[1], r[2], r[3])) for r in rows}

    def _unwrap(self, ref: str, kid: str, wrapped: bytes | None) -> bytes | None:
        """None only when erased; a key that does not open raises :class:`MasterKeyError`."""
        if wrapped is None:
            return None
        kept = self._unwrapped.pop(ref, None)
        key = kept[1] if kept is not None and kept[0] == wrapped else None
        if key is None:
            key = self.ring.unwrap(ref, kid, wrapped)
        self._keep(ref, wrapped, key)
        return key

    def _keep(self, ref: str, wrapped: bytes, key: bytes) -> None:
        """``key`` kept as the most recently used (the cache keeps the order of insertion)."""
        if len(self._unwrapped) >= UNWRAPPED_KEPT:
            self._unwrapped.popitem(last=False)  # the least recently used
        self._unwrapped[ref] = (wrapped, key)


def new_ref() -> str:
    """A pseudonym: random, so it says nothing about whom it stands for."""
    return _REF_PREFIX + secrets.token_hex(REF_BYTES)


_REF_PREFIX = "cust-"


def identity_of(customer_id: str | None, email: str | None, phone: str | None) -> str | None:
    """Who a request's data belongs to: the customer id the adapter sends, else the normalised
    contact address (intake's contract lower-cases e-mail and compacts phone numbers)."""
    if customer_id:
        return f"id:{customer_id}"
    if email:
        return f"email:{email.strip().lower()}"
    if phone:
        return f"phone:{phone}"
    return None


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"servicedesk " + purpose
    ).derive(secret)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str, source: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except ValueError:
        raise MasterKeyError(f"{source}: the master key is not base64url") from None

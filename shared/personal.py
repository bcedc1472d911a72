"""Personal fields of events, sealed per data subject: the one way to encrypt and decrypt them.

An event field typed :data:`PersonalText` holds a customer's personal data (a name, an address,
what they wrote). Intake seals it with the subject's data key before the event is stored, and
from then on it travels as ``{"ref": "cust-…", "ct": "…"}``: the pseudonym in clear (whose data
it is), the text as AES-GCM ciphertext bound to that pseudonym. In Python a sealed field is a
:class:`Sealed` — a ``str`` reading ``[sealed cust-…]`` — so code that never opens it still
runs; code that needs the text asks :class:`DataKeys` to :meth:`~DataKeys.reveal` the event.
Once the subject's key is destroyed (``desk customer erase``), revealing yields :data:`ERASED`,
never an exception. Old events written before sealing carry clear strings and read as they are.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
from binascii import b2a_base64
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, PlainSerializer, WithJsonSchema, WrapValidator
from pydantic_core.core_schema import SerializationInfo, ValidatorFunctionWrapHandler

from shared.database import Connection
from shared.keystore import NONCE_BYTES, KeyStore, when_keys_forgotten


class Sealed(str):
    """A sealed personal field: its pseudonym and ciphertext; as text, a placeholder."""

    ref: str
    ct: str

    def __new__(cls, ref: str, ct: str) -> Sealed:
        sealed = str.__new__(cls, f"[sealed {ref}]")
        sealed.ref, sealed.ct = ref, ct
        return sealed

    def as_json(self) -> dict[str, str]:
        return {"ref": self.ref, "ct": self.ct}


class Unsealed(str):
    """Clear text bound for a sealed field: sealed for ``ref`` when its event is appended (an
    event store with a key store does it, :func:`seal_pending`); never serialised as it is."""

    ref: str

    made = False
    """Whether this process ever made one: until it does, no event can hold one, and appending
    skips the search (intake seals everything itself and never makes one)."""

    def __new__(cls, text: str, ref: str) -> Unsealed:
        unsealed = super().__new__(cls, text)
        unsealed.ref = ref
        Unsealed.made = True
        return unsealed


_PLACEHOLDER = re.compile(r"^\[sealed ([\w-]+)\]$")


def ref_in(text: str) -> str | None:
    """The pseudonym a sealed field (or its placeholder text, as a table keeps it) names."""
    if isinstance(text, Sealed):
        return text.ref
    match = _PLACEHOLDER.match(text)
    return match[1] if match else None


class Erased(str):
    """What a personal field reads as once its subject's key is destroyed."""


ERASED = Erased("erased")


def _read(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    if isinstance(value, Sealed):
        return value
    if isinstance(value, dict) and (sealed := sealed_json(value)) is not None:
        return sealed
    return handler(value)


SEALED_ONLY: dict[str, bool] = {"sealed_only": True}
"""Serialisation context of a writer that seals every personal field itself (intake's event
store): a field still in clear there is a bug, refused rather than written. It is the net
behind sealing that builds events from sealed texts instead of walking each event."""


def _write(value: str, info: SerializationInfo) -> Any:
    if isinstance(value, Sealed):
        return value.as_json()
    if isinstance(value, Unsealed):
        raise ValueError("a personal field was not sealed before it was written")
    if info.context is SEALED_ONLY and type(value) is str:
        raise ValueError("a personal field in clear where every one must be sealed")
    return value


class _Personal:
    """Marks a field as personal data (what :meth:`DataKeys.seal` seals)."""


PERSONAL_SCHEMA: dict[str, Any] = {
    "x-personal": True,
    "description": "Personal data: sealed as {ref, ct} (AES-GCM under the subject's data key).",
    "anyOf": [
        {"type": "string"},
        {
            "type": "object",
            "properties": {"ref": {"type": "string"}, "ct": {"type": "string"}},
            "required": ["ref", "ct"],
            "additionalProperties": False,
        },
    ],
}

PersonalText = Annotated[
    str,
    _Personal(),
    WrapValidator(_read),
    PlainSerializer(_write),
    WithJsonSchema(PERSONAL_SCHEMA),
]
"""A personal field: clear text, or sealed (as every event intake writes carries it)."""

OptionalPersonalText = Annotated[
    str | None,
    _Personal(),
    WrapValidator(_read),
    PlainSerializer(_write),
    WithJsonSchema({**PERSONAL_SCHEMA, "anyOf": [*PERSONAL_SCHEMA["anyOf"], {"type": "null"}]}),
]
"""A personal field that may be absent."""

M = TypeVar("M", bound=BaseModel)

NONCE_BLOCK = 64
"""Nonces drawn from the OS at once into the process's pool (12 bytes each)."""

_B64URL = bytes.maketrans(b"+/", b"-_")
"""Base64 to unpadded base64url (as :func:`base64.urlsafe_b64encode` gives, for half its cost)."""


class DataKeys:
    """Data keys of some subjects (one batch's), to seal and open their fields with."""

    def __init__(self, keys: Mapping[str, bytes | None]) -> None:
        self._sealers = {ref: _sealer(ref, k) if k is not None else None for ref, k in keys.items()}
        """Each subject's :class:`Sealer` (None once erased), kept from batch to batch."""

    def holds(self, ref: str) -> bool:
        """Whether ``ref``'s key is here (not erased)."""
        return self._sealers.get(ref) is not None

    def seal_text(self, ref: str, text: str) -> Sealed:
        return self.seal_bytes(ref, text.encode())

    def seal_bytes(self, ref: str, clear: bytes) -> Sealed:
        """Any bytes (a record as it came, which need not be text) sealed for ``ref``."""
        return self.sealer(ref).seal_bytes(clear)

    def sealer(self, ref: str) -> Sealer:
        """What seals ``ref``'s fields one after another (a request's half dozen)."""
        sealer = self._sealers.get(ref)
        if sealer is None:
            raise KeyError(f"no data key for {ref}")
        return sealer

    def open_text(self, value: str) -> str:
        """A field's text: clear text as it is, a sealed one decrypted, :data:`ERASED` when
        its key is gone (or the ciphertext is not its key's)."""
        if not isinstance(value, Sealed):
            return value
        clear = self.open_bytes(value)
        try:
            return ERASED if clear is None else clear.decode()
        except UnicodeDecodeError:
            return ERASED

    def open_bytes(self, value: Sealed) -> bytes | None:
        """What :meth:`seal_bytes` sealed; None when its key is gone (or is not this one)."""
        sealer = self._sealers.get(value.ref)
        if sealer is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(value.ct + "=" * (-len(value.ct) % 4))
            return sealer.cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], sealer.aad)
        except (InvalidTag, ValueError):
            return None

    def seal(self, model: M, ref: str) -> M:
        """``model`` with every personal field (nested models and lists too) sealed for
        ``ref``."""
        return _rebuild(model, lambda v: self.seal_text(ref, v) if type(v) is str else v)

    def seal_pending(self, model: M) -> M:
        """``model`` with every :class:`Unsealed` field sealed for its pseudonym (erased when
        the key is gone: the text is not kept in clear)."""
        return _rebuild(model, self._seal_unsealed)

    def _seal_unsealed(self, value: str) -> str:
        if not isinstance(value, Unsealed):
            return value
        if self._sealers.get(value.ref) is None:
            return ERASED
        return self.seal_text(value.ref, str(value))

    def reveal(self, model: M) -> M:
        """``model`` with every sealed field opened."""
        return _rebuild(model, self.open_text)

    def reveal_json(self, value: Any) -> Any:
        """JSON data (an event's, as published) with every sealed field opened: for readers
        that work on the JSON itself (timelines, exports)."""
        if isinstance(value, dict):
            sealed = sealed_json(value)
            if sealed is not None:
                return self.open_text(sealed)
            return {k: self.reveal_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.reveal_json(v) for v in value]
        return value


class Sealer:
    """Seals texts for one subject (:meth:`DataKeys.sealer`), made once per data key and kept
    from batch to batch: intake seals every personal field of every request through one, so
    each step here is paid per field (hence one method doing it all, and the names it needs
    looked up once)."""

    __slots__ = ("_placeholder", "aad", "cipher", "encrypt", "ref")

    def __init__(self, ref: str, cipher: AESGCM) -> None:
        self.ref = ref
        self.cipher = cipher
        self.encrypt = cipher.encrypt
        self.aad = ref.encode()  # the ciphertext is bound to its pseudonym
        self._placeholder = f"[sealed {ref}]"

    def __call__(self, text: str) -> Sealed:
        # seal_bytes(text.encode()) written out: one call less a field is about a point of
        # bench.sealing's overhead (25.0/25.8 % against 26.1/26.7 % alternated, 2026-12-04).
        nonce = _NONCES.pop() if _NONCES else _draw()
        sealed = _new_str(Sealed, self._placeholder)
        sealed.ref = self.ref
        sealed.ct = (
            _b2a(nonce + self.encrypt(nonce, text.encode(), self.aad), newline=False)
            .translate(_B64URL)
            .rstrip(b"=")
            .decode()
        )
        return sealed

    def seal_bytes(self, clear: bytes) -> Sealed:
        nonce = _NONCES.pop() if _NONCES else _draw()
        sealed = _new_str(Sealed, self._placeholder)
        sealed.ref = self.ref
        raw = nonce + self.encrypt(nonce, clear, self.aad)
        sealed.ct = _b2a(raw, newline=False).translate(_B64URL).rstrip(b"=").decode()
        return sealed


_NONCES: list[bytes] = []
"""Fresh nonces, each popped once, by every sealer of the process: AES-GCM under one key must
never take a nonce twice, and random 96-bit nonces drawn from the OS in blocks never repeat in
practice (one system call per :data:`NONCE_BLOCK` fields instead of one a field)."""

_new_str = str.__new__
_b2a = b2a_base64


# A forked child must not take the nonces its parent still holds (the same key, the same nonce).
os.register_at_fork(after_in_child=_NONCES.clear)


def _draw() -> bytes:
    """A fresh random nonce, :data:`_NONCES` refilled from the OS first."""
    block = os.urandom(NONCE_BYTES * NONCE_BLOCK)
    _NONCES.extend(block[at : at + NONCE_BYTES] for at in range(0, len(block), NONCE_BYTES))
    return _NONCES.pop()


def for_subject(model: M, ref: str) -> M:
    """``model`` with its clear personal fields bound to be sealed for ``ref`` when appended
    (for code that cannot await the keys, e.g. a pure domain model)."""
    return _rebuild(model, lambda v: Unsealed(v, ref) if type(v) is str else v)


async def seal_pending(store: KeyStore, conn: Connection, models: list[M]) -> list[M]:
    """``models`` with their :class:`Unsealed` fields sealed (the event store calls it)."""
    if not Unsealed.made:
        return models
    refs: set[str] = set()
    for model in models:
        _collect(model, refs, Unsealed)
    if not refs:
        return models
    keys = DataKeys(await store.keys(conn, refs))
    return [keys.seal_pending(m) for m in models]


async def keys_for(store: KeyStore, conn: Connection, values: Iterable[Any]) -> DataKeys:
    """The data keys that open every sealed field of ``values`` (models, or JSON data)."""
    refs: set[str] = set()
    for value in values:
        _collect(value, refs)
    return DataKeys(await store.keys(conn, refs))


def personal_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` that may hold personal data (typed personal, or holding a model
    that may): what must not be copied out of an opened event beside its personal texts."""
    return frozenset(name for name, _ in _fields(model))


def sealed_refs(value: Any) -> set[str]:
    """The pseudonyms whose data ``value`` holds."""
    refs: set[str] = set()
    _collect(value, refs)
    return refs


def to_column(text: str) -> str:
    """A personal field as a table column keeps it: a sealed one as its JSON, so that it is
    still sealed there, erased with its key, and can be put back into an event as it was."""
    return json.dumps(text.as_json()) if isinstance(text, Sealed) else str(text)


def from_column(text: str) -> str:
    """What :func:`to_column` kept: a :class:`Sealed` again, or the clear text it was."""
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            return text
        if isinstance(value, dict) and (sealed := sealed_json(value)) is not None:
            return sealed
    return text


def sealed_json(value: dict[str, Any]) -> Sealed | None:
    ref, ct = value.get("ref"), value.get("ct")
    if len(value) == 2 and isinstance(ref, str) and isinstance(ct, str):
        return Sealed(ref, ct)
    return None


_ATOMS = frozenset({str, int, float, bool, bytes, type(None), datetime, date, UUID, Decimal})
"""Types of values that hold nothing sealed (unless in a personal field): the walks below skip
them by a set look-up — ``isinstance`` against a model class (an ABC) costs ten times more, and
every event sealed or opened is walked."""


def _collect(value: Any, refs: set[str], kind: type[Sealed | Unsealed] = Sealed) -> None:
    if isinstance(value, kind):
        refs.add(value.ref)
    elif type(value) in _ATOMS or isinstance(value, str):
        return
    elif kind is Sealed and isinstance(value, dict) and (sealed := sealed_json(value)):
        refs.add(sealed.ref)
    elif isinstance(value, BaseModel):
        for name, _ in _fields(type(value)):
            item = getattr(value, name)
            if type(item) not in _ATOMS:
                _collect(item, refs, kind)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, refs, kind)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, refs, kind)


SEALERS_KEPT = 1_024
"""Sealers kept for the next batches of the same subjects: an AES-GCM cipher holds ≈ 2.9 KB, so
≈ 3 MB (16,384 took 47 MB). The subjects of the last few seconds' batches — a conversation's
messages — find theirs; any other pays a cipher's making, about two encryptions."""


@functools.lru_cache(maxsize=SEALERS_KEPT)
def _sealer(ref: str, key: bytes) -> Sealer:
    """A data key's sealer, kept for the next batch of the same subject. Keyed by the key
    itself: only a caller that has just read the subject's key from the key store reaches it,
    and all are dropped whenever a key store drops its keys (an erasure), so no destroyed key
    stays in this process."""
    return Sealer(ref, AESGCM(key))


when_keys_forgotten(_sealer.cache_clear)


@functools.cache
def _fields(model: type[BaseModel]) -> tuple[tuple[str, bool], ...]:
    """The fields of ``model`` that may hold personal data, and whether each is personal
    itself: read once per class, since every event a service seals or opens walks them
    (measured: most of sealing's cost otherwise). A field typed as plain values (text that is
    not personal, numbers, times, literals, lists of them) is left out: nothing sealed can be in
    it. One typed as a model is kept, whatever that model's fields: it may hold a subclass."""
    fields = []
    for name, info in model.model_fields.items():
        personal = any(isinstance(m, _Personal) for m in info.metadata)
        if personal or not _plain(info.annotation):
            fields.append((name, personal))
    return tuple(fields)


def _plain(annotation: Any) -> bool:
    """Whether a field so typed holds only values with nothing inside (see :data:`_ATOMS`)."""
    origin = get_origin(annotation)
    if origin is Literal:
        return True
    if origin in (Union, UnionType, list, tuple, set, frozenset):
        return all(_plain(a) for a in get_args(annotation) if a is not Ellipsis)
    if origin is not None:
        return False
    return isinstance(annotation, type) and (annotation in _ATOMS or issubclass(annotation, Enum))


def _rebuild(model: M, change: Any) -> M:
    updates: dict[str, Any] = {}
    for name, personal in _fields(type(model)):
        value = getattr(model, name)
        if value is None or (
            not personal and (type(value) in _ATOMS or not isinstance(value, BaseModel | list))
        ):
            continue  # nothing personal can be inside
        new = _changed(value, change, personal=personal)
        if new is not value:
            updates[name] = new
    if not updates:
        return model
    copy = model.__copy__()  # the values are already valid: no second validation
    copy.__dict__.update(updates)
    return copy


def _changed(value: Any, change: Any, *, personal: bool) -> Any:
    if isinstance(value, str):
        return change(value) if personal else value
    if isinstance(value, BaseModel):
        return _rebuild(value, change)
    if isinstance(value, list):
        items = [_changed(v, change, personal=personal) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value

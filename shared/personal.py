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
from pydantic import (
    BaseModel,
    ConfigDict,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    model_serializer,
    model_validator,
)
from pydantic_core.core_schema import SerializationInfo, ValidatorFunctionWrapHandler

from shared.database import Connection
from shared.keystore import NONCE_BYTES, UNWRAPPED_KEPT, KeyStore


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


class SealedPart(Sealed):
    """One of several fields sealed together under one ciphertext (a customer's name,
    addresses and id: :class:`SealedTogether`). ``ct`` holds them all, as a JSON object;
    ``part`` names this one. Alone (copied into another record) it travels as
    ``{"ref", "ct", "part"}``."""

    part: str

    def __new__(cls, ref: str, ct: str, part: str) -> SealedPart:
        sealed = str.__new__(cls, f"[sealed {ref}]")
        sealed.ref, sealed.ct, sealed.part = ref, ct, part
        return sealed

    def as_json(self) -> dict[str, str]:
        return {"ref": self.ref, "ct": self.ct, "part": self.part}


_PARTS_AAD = b"\x00parts"
"""Appended to the pseudonym as the associated data of a ciphertext of parts, so that one can
never be opened as a single field's, nor a single field's as parts."""


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
        {
            "type": "object",
            "description": "One part of several sealed together (a copy of a customer's field).",
            "properties": {
                "ref": {"type": "string"},
                "ct": {"type": "string"},
                "part": {"type": "string"},
            },
            "required": ["ref", "ct", "part"],
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
T = TypeVar("T", bound="SealedTogether")

NONCE_BLOCK = 64
"""Nonces drawn from the OS at once by a :class:`DataKeys` (12 bytes each)."""

_B64URL = bytes.maketrans(b"+/", b"-_")
"""Base64 to unpadded base64url (as :func:`base64.urlsafe_b64encode` gives, for half its cost)."""


class DataKeys:
    """Data keys of some subjects (one batch's), to seal and open their fields with."""

    def __init__(self, keys: Mapping[str, bytes | None]) -> None:
        self._ciphers = {ref: _cipher(k) if k is not None else None for ref, k in keys.items()}
        self._nonces: list[bytes] = []
        """Fresh nonces, each popped once (by this and every sealer it made)."""
        self._sealers: dict[str, Sealer] = {}
        """One per subject: a model sealed field by field (:meth:`seal`) makes it once."""
        self._parts: dict[tuple[str, str], dict[str, Any] | None] = {}
        """Ciphertexts of parts opened (by pseudonym and ``ct``): a record's customer is
        opened once, not once a field."""

    def holds(self, ref: str) -> bool:
        """Whether ``ref``'s key is here (not erased)."""
        return self._ciphers.get(ref) is not None

    def seal_text(self, ref: str, text: str) -> Sealed:
        return self.seal_bytes(ref, text.encode())

    def seal_bytes(self, ref: str, clear: bytes) -> Sealed:
        """Any bytes (a record as it came, which need not be text) sealed for ``ref``."""
        return self.sealer(ref).seal_bytes(clear)

    def sealer(self, ref: str) -> Sealer:
        """What seals ``ref``'s fields one after another (a request's half dozen): the cipher
        and what binds a ciphertext to ``ref`` looked up once, not once a field."""
        sealer = self._sealers.get(ref)
        if sealer is None:
            cipher = self._ciphers.get(ref)
            if cipher is None:
                raise KeyError(f"no data key for {ref}")
            sealer = self._sealers[ref] = Sealer(ref, cipher, self._nonces)
        return sealer

    def open_text(self, value: str) -> str:
        """A field's text: clear text as it is, a sealed one decrypted, :data:`ERASED` when
        its key is gone (or the ciphertext is not its key's)."""
        if not isinstance(value, Sealed):
            return value
        if isinstance(value, SealedPart):
            return self._open_part(value)
        clear = self.open_bytes(value)
        try:
            return ERASED if clear is None else clear.decode()
        except UnicodeDecodeError:
            return ERASED

    def open_bytes(self, value: Sealed) -> bytes | None:
        """What :meth:`seal_bytes` sealed; None when its key is gone (or is not this one)."""
        cipher = self._ciphers.get(value.ref)
        if cipher is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(value.ct + "=" * (-len(value.ct) % 4))
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], value.ref.encode())
        except (InvalidTag, ValueError):
            return None

    def _open_part(self, value: SealedPart) -> str:
        opened = (value.ref, value.ct)  # a ciphertext is its pseudonym's only
        if opened in self._parts:
            parts = self._parts[opened]
        else:
            parts = self._parts[opened] = self._open_parts(value)
        text = parts.get(value.part) if parts is not None else None
        return text if isinstance(text, str) else ERASED

    def _open_parts(self, value: Sealed) -> dict[str, Any] | None:
        cipher = self._ciphers.get(value.ref)
        if cipher is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(value.ct + "=" * (-len(value.ct) % 4))
            clear = cipher.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], value.ref.encode() + _PARTS_AAD
            )
            parts = json.loads(clear)
        except (InvalidTag, ValueError):
            return None
        return parts if isinstance(parts, dict) else None

    def seal(self, model: M, ref: str) -> M:
        """``model`` with every personal field (nested models and lists too) sealed for
        ``ref``."""
        sealer = self.sealer(ref)
        return _rebuild(
            model, lambda v: sealer(v) if type(v) is str else v, together=sealer.together
        )

    def seal_pending(self, model: M) -> M:
        """``model`` with every :class:`Unsealed` field sealed for its pseudonym (erased when
        the key is gone: the text is not kept in clear)."""
        return _rebuild(model, self._seal_unsealed)

    def _seal_unsealed(self, value: str) -> str:
        if not isinstance(value, Unsealed):
            return value
        if self._ciphers.get(value.ref) is None:
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
            parts = parts_json(value.get(SEALED_KEY))
            opened = {
                k: self.reveal_json(v) for k, v in value.items() if k != SEALED_KEY or parts is None
            }
            for part in parts or ():
                opened.setdefault(part.part, self.open_text(part))
            return opened
        if isinstance(value, list):
            return [self.reveal_json(v) for v in value]
        return value


class Sealer:
    """Seals texts for one subject (:meth:`DataKeys.sealer`): intake seals every personal
    field of every request through one, so each step here is paid per field."""

    __slots__ = ("_aad", "_encrypt", "_nonces", "_placeholder", "ref")

    def __init__(self, ref: str, cipher: AESGCM, nonces: list[bytes]) -> None:
        self.ref = ref
        self._encrypt = cipher.encrypt
        self._aad = ref.encode()  # the ciphertext is bound to its pseudonym
        self._nonces = nonces
        self._placeholder = f"[sealed {ref}]"

    def __call__(self, text: str) -> Sealed:
        return self.seal_bytes(text.encode())

    def seal_bytes(self, clear: bytes) -> Sealed:
        nonces = self._nonces
        nonce = nonces.pop() if nonces else _draw(nonces)
        raw = nonce + self._encrypt(nonce, clear, self._aad)
        sealed = str.__new__(Sealed, self._placeholder)
        sealed.ref = self.ref
        sealed.ct = b2a_base64(raw, newline=False).translate(_B64URL).rstrip(b"=").decode()
        return sealed

    def together(self, model: T) -> T:
        """``model`` with its personal fields in clear sealed together (:meth:`parts`)."""
        texts = {
            name: value
            for name in _personal_names(type(model))
            if type(value := getattr(model, name)) is str
        }
        if not texts:
            return model
        copy = model.__copy__()  # the values are already valid: no second validation
        copy.__dict__.update(self.parts(texts))
        return copy

    def parts(self, texts: Mapping[str, str]) -> dict[str, SealedPart]:
        """``texts`` (a field name to its text) sealed together as one ciphertext, as
        :class:`SealedTogether` carries them: one encryption, one nonce and one tag for
        them all — most of a field's cost is what is paid per ciphertext, not per byte."""
        nonces = self._nonces
        nonce = nonces.pop() if nonces else _draw(nonces)
        clear = json.dumps(texts, ensure_ascii=False, separators=(",", ":")).encode()
        raw = nonce + self._encrypt(nonce, clear, self._aad + _PARTS_AAD)
        ct = b2a_base64(raw, newline=False).translate(_B64URL).rstrip(b"=").decode()
        ref, placeholder, new = self.ref, self._placeholder, str.__new__
        sealed: dict[str, SealedPart] = {}
        for part in texts:
            one = sealed[part] = new(SealedPart, placeholder)
            one.ref, one.ct, one.part = ref, ct, part
        return sealed


def _draw(nonces: list[bytes]) -> bytes:
    """A fresh random nonce, ``nonces`` refilled from the OS in blocks (one system call per
    :data:`NONCE_BLOCK` fields instead of one a field): each is popped, so used once."""
    block = os.urandom(NONCE_BYTES * NONCE_BLOCK)
    nonces.extend(block[at : at + NONCE_BYTES] for at in range(0, len(block), NONCE_BYTES))
    return nonces.pop()


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
    """A sealed field as JSON holds it: ``{"ref", "ct"}``, or one part of a ciphertext of
    several, ``{"ref", "ct", "part"}``."""
    ref, ct = value.get("ref"), value.get("ct")
    if not (isinstance(ref, str) and isinstance(ct, str)):
        return None
    if len(value) == 2:
        return Sealed(ref, ct)
    part = value.get("part")
    if len(value) == 3 and isinstance(part, str):
        return SealedPart(ref, ct, part)
    return None


SEALED_KEY = "sealed"
"""Where a :class:`SealedTogether` model's personal fields travel when sealed together."""


def parts_json(value: Any) -> list[SealedPart] | None:
    """The fields a ``{"ref", "ct", "parts": [names]}`` holds (what :data:`SEALED_KEY` of a
    :class:`SealedTogether` model carries), or None when ``value`` is not one."""
    if not isinstance(value, dict) or len(value) != 3:
        return None
    ref, ct, names = value.get("ref"), value.get("ct"), value.get("parts")
    if not (isinstance(ref, str) and isinstance(ct, str) and isinstance(names, list)):
        return None
    if not all(isinstance(name, str) for name in names):
        return None
    return [SealedPart(ref, ct, name) for name in names]


def _together_schema(schema: dict[str, Any]) -> None:
    """A :class:`SealedTogether` model's JSON Schema: its personal fields may be in
    :data:`SEALED_KEY` instead, so none of them is required on its own."""
    properties = schema.setdefault("properties", {})
    personal = [name for name, field in properties.items() if field.get("x-personal")]
    properties[SEALED_KEY] = {
        "x-personal": True,
        "description": "Personal fields sealed together, in their place: one AES-GCM "
        "ciphertext of a JSON object of them (`parts` names them) under the subject's key.",
        "type": "object",
        "properties": {
            "ref": {"type": "string"},
            "ct": {"type": "string"},
            "parts": {"type": "array", "items": {"enum": personal}},
        },
        "required": ["ref", "ct", "parts"],
        "additionalProperties": False,
    }
    required = [name for name in schema.get("required", []) if name not in personal]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)


class SealedTogether(BaseModel):
    """A model whose personal fields may be sealed together, as one ciphertext: a customer's
    name, addresses and id are written at once and read at once, so intake seals them once
    (:meth:`Sealer.parts`) instead of once a field — on its busiest path, each ciphertext costs
    more in Python than in AES. When every personal field present is a part of one
    ciphertext, named as the field, they travel as ``"sealed": {"ref", "ct", "parts"}`` in
    their place; otherwise each as it is. Read back, each field is its :class:`SealedPart`,
    so readers see the same fields either way."""

    model_config = ConfigDict(json_schema_extra=_together_schema)

    @model_validator(mode="before")
    @classmethod
    def _unpack(cls, data: Any) -> Any:
        if not isinstance(data, dict) or SEALED_KEY not in data:
            return data
        parts = parts_json(data[SEALED_KEY])
        if parts is None:
            raise ValueError(f"{SEALED_KEY!r} is not a sealed {{ref, ct, parts}}")
        unpacked = {k: v for k, v in data.items() if k != SEALED_KEY}
        personal = _personal_names(cls)
        for part in parts:
            if part.part not in personal or unpacked.get(part.part) is not None:
                raise ValueError(f"sealed part {part.part!r} is no personal field left empty")
            unpacked[part.part] = part
        return unpacked

    @model_serializer(mode="wrap")
    def _pack(self, handler: SerializerFunctionWrapHandler) -> Any:
        out = handler(self)
        present = [
            (name, value)
            for name in _personal_names(type(self))
            if (value := getattr(self, name)) is not None
        ]
        if not present or not isinstance(out, dict):
            return out
        first = present[0][1]
        if not all(
            isinstance(value, SealedPart)
            and value.part == name
            and value.ct == first.ct
            and value.ref == first.ref
            for name, value in present
        ):
            return out
        for name, _ in present:
            out.pop(name, None)  # in the ciphertext now (an absent one stays null)
        out[SEALED_KEY] = {"ref": first.ref, "ct": first.ct, "parts": [n for n, _ in present]}
        return out


@functools.cache
def _personal_names(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(name for name, personal in _fields(model) if personal)


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
    elif kind is Sealed and isinstance(value, dict) and (parts := parts_json(value)):
        refs.add(parts[0].ref)
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


@functools.lru_cache(maxsize=UNWRAPPED_KEPT)
def _cipher(key: bytes) -> AESGCM:
    """A data key's cipher, kept for the next batch of the same subject (making one costs
    twice an encryption) as long as the key store keeps the key unwrapped. Keyed by the key
    itself: only a caller that has just read the subject's key from the key store reaches it,
    so a destroyed key is never used again."""
    return AESGCM(key)


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


def _rebuild(model: M, change: Any, together: Any = None) -> M:
    """``model`` with ``change`` applied to each personal field (``together``, if given, to a
    :class:`SealedTogether` model first)."""
    if together is not None and isinstance(model, SealedTogether):
        model = together(model)
    updates: dict[str, Any] = {}
    for name, personal in _fields(type(model)):
        value = getattr(model, name)
        if value is None or (
            not personal and (type(value) in _ATOMS or not isinstance(value, BaseModel | list))
        ):
            continue  # nothing personal can be inside
        new = _changed(value, change, together, personal=personal)
        if new is not value:
            updates[name] = new
    if not updates:
        return model
    copy = model.__copy__()  # the values are already valid: no second validation
    copy.__dict__.update(updates)
    return copy


def _changed(value: Any, change: Any, together: Any, *, personal: bool) -> Any:
    if isinstance(value, str):
        return change(value) if personal else value
    if isinstance(value, BaseModel):
        return _rebuild(value, change, together)
    if isinstance(value, list):
        items = [_changed(v, change, together, personal=personal) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value

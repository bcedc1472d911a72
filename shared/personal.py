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
import os
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, PlainSerializer, WithJsonSchema, WrapValidator
from pydantic_core.core_schema import ValidatorFunctionWrapHandler

from shared.database import Connection
from shared.keystore import NONCE_BYTES, KeyStore


class Sealed(str):
    """A sealed personal field: its pseudonym and ciphertext; as text, a placeholder."""

    ref: str
    ct: str

    def __new__(cls, ref: str, ct: str) -> Sealed:
        sealed = super().__new__(cls, f"[sealed {ref}]")
        sealed.ref, sealed.ct = ref, ct
        return sealed

    def as_json(self) -> dict[str, str]:
        return {"ref": self.ref, "ct": self.ct}


class Erased(str):
    """What a personal field reads as once its subject's key is destroyed."""


ERASED = Erased("erased")


def _read(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    if isinstance(value, Sealed):
        return value
    if isinstance(value, dict) and isinstance(value.get("ref"), str):
        ct = value.get("ct")
        if isinstance(ct, str) and len(value) == 2:
            return Sealed(value["ref"], ct)
    return handler(value)


def _write(value: str) -> Any:
    return value.as_json() if isinstance(value, Sealed) else value


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


class DataKeys:
    """Data keys of some subjects (one batch's), to seal and open their fields with."""

    def __init__(self, keys: Mapping[str, bytes | None]) -> None:
        self._ciphers = {ref: AESGCM(k) if k is not None else None for ref, k in keys.items()}

    def seal_text(self, ref: str, text: str) -> Sealed:
        cipher = self._ciphers.get(ref)
        if cipher is None:
            raise KeyError(f"no data key for {ref}")
        nonce = os.urandom(NONCE_BYTES)
        raw = nonce + cipher.encrypt(nonce, text.encode(), ref.encode())
        return Sealed(ref, base64.urlsafe_b64encode(raw).rstrip(b"=").decode())

    def open_text(self, value: str) -> str:
        """A field's text: clear text as it is, a sealed one decrypted, :data:`ERASED` when
        its key is gone (or the ciphertext is not its key's)."""
        if not isinstance(value, Sealed):
            return value
        cipher = self._ciphers.get(value.ref)
        if cipher is None:
            return ERASED
        try:
            raw = base64.urlsafe_b64decode(value.ct + "=" * (-len(value.ct) % 4))
            clear = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], value.ref.encode())
        except (InvalidTag, ValueError):
            return ERASED
        return clear.decode()

    def seal(self, model: M, ref: str) -> M:
        """``model`` with every personal field (nested models and lists too) sealed for
        ``ref``."""
        return _rebuild(model, lambda v: self.seal_text(ref, v) if type(v) is str else v)

    def reveal(self, model: M) -> M:
        """``model`` with every sealed field opened."""
        return _rebuild(model, self.open_text)


async def keys_for(store: KeyStore, conn: Connection, values: Iterable[Any]) -> DataKeys:
    """The data keys that open every sealed field of ``values`` (models, lists, dicts)."""
    refs: set[str] = set()
    for value in values:
        _collect(value, refs)
    return DataKeys(await store.keys(conn, refs))


def sealed_refs(value: Any) -> set[str]:
    """The pseudonyms whose data ``value`` holds."""
    refs: set[str] = set()
    _collect(value, refs)
    return refs


def _collect(value: Any, refs: set[str]) -> None:
    if isinstance(value, Sealed):
        refs.add(value.ref)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect(getattr(value, name), refs)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, refs)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, refs)


def _rebuild(model: M, change: Any) -> M:
    updates: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        personal = any(isinstance(m, _Personal) for m in info.metadata)
        new = _changed(value, change, personal=personal)
        if new is not value:
            updates[name] = new
    return model.model_copy(update=updates) if updates else model


def _changed(value: Any, change: Any, *, personal: bool) -> Any:
    if isinstance(value, str):
        return change(value) if personal else value
    if isinstance(value, BaseModel):
        return _rebuild(value, change)
    if isinstance(value, list):
        items = [_changed(v, change, personal=personal) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value

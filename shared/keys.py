"""The key ring: the HMAC keys of the issuers servicedesk trusts, and what each may vouch for.

An issuer is whoever signs: the operators' ``desk`` tool (tokens of agents), each service (its
events on Kafka, and ``system`` tokens), notify (customer tokens bound to one ticket, carried by
the signed link of a resolution notice). A key belongs to one issuer and says what that issuer may
vouch for; a token or record signed with it claims nothing beyond that.

Keys come from settings, as JSON (``DESK_KEYS_FILE`` and/or ``DESK_KEYS``)::

    {"keys": [{"kid": "desk-2026-11", "issuer": "desk", "vouches": ["agents"],
               "secret": "<base64url of at least 32 random bytes>"}]}

Several keys of one issuer may be listed at once (rotation): each verifies; the last one not
marked ``"signing": false`` signs. ``desk up`` writes a ring of fresh local keys into its data
directory; outside local mode a process refuses to start without keys, or with a short or
well-known secret (:meth:`KeyRing.problems`).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from shared.settings import Settings, env_name

Vouch = Literal["agents", "customers", "system"]
"""What an issuer may vouch for: agents of the directory (the operators' tool), customers of one
ticket (notify's signed links), the ``system`` actor (the services themselves)."""
VOUCHES: frozenset[str] = frozenset({"agents", "customers", "system"})
MIN_SECRET_BYTES = 32

WELL_KNOWN_SECRETS: frozenset[bytes] = frozenset(
    s.encode()
    for s in (
        "",
        "secret",
        "changeme",
        "change-me",
        "password",
        "local-development-secret",
        "servicedesk",
        "desk",
    )
)
"""Secrets anyone could guess (defaults of tutorials and of this project's own local setup)."""


class KeyRingError(ValueError):
    """A key ring that cannot be used, and why."""


@dataclass(frozen=True, slots=True)
class Key:
    kid: str
    issuer: str
    vouches: frozenset[str]
    secret: bytes
    signing: bool = True

    def problems(self) -> list[str]:
        """Why this key must not be trusted outside local mode (empty when it may)."""
        found = []
        if len(self.secret) < MIN_SECRET_BYTES:
            found.append(f"key {self.kid}: secret shorter than {MIN_SECRET_BYTES} bytes")
        if self.secret.strip(self.secret[:1]) == b"" or self.secret in WELL_KNOWN_SECRETS:
            found.append(f"key {self.kid}: a well-known or repeated-byte secret")
        return found

    def describe(self) -> dict[str, Any]:
        """The key as the key file writes it."""
        return {
            "kid": self.kid,
            "issuer": self.issuer,
            "vouches": sorted(self.vouches),
            "secret": _b64(self.secret),
            **({} if self.signing else {"signing": False}),
        }


class KeyRing:
    """Every key a process trusts, by key id; the signing key of each issuer."""

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        self._by_kid: dict[str, Key] = {}
        self._signing: dict[str, Key] = {}
        for key in keys:
            if key.kid in self._by_kid:
                raise KeyRingError(f"key id {key.kid} appears twice")
            self._by_kid[key.kid] = key
            if key.signing:
                self._signing[key.issuer] = key

    def __len__(self) -> int:
        return len(self._by_kid)

    def __iter__(self) -> Any:
        return iter(self._by_kid.values())

    def get(self, kid: str) -> Key | None:
        return self._by_kid.get(kid)

    def signing_key(self, issuer: str) -> Key | None:
        """The key ``issuer`` signs with now (the last listed one that signs)."""
        return self._signing.get(issuer)

    def issuer_of(self, vouch: Vouch) -> Key | None:
        """A signing key of an issuer that may vouch for ``vouch`` (the local tools use it)."""
        return next((k for k in self._signing.values() if vouch in k.vouches), None)

    def problems(self, *, issuer: str | None = None) -> list[str]:
        """Why this ring must not be used outside local mode: no keys, weak secrets, and (for a
        service) no key of its own to sign its events with."""
        found = [] if self._by_kid else ["no keys (set DESK_KEYS_FILE or DESK_KEYS)"]
        for key in self._by_kid.values():
            found.extend(key.problems())
        if issuer is not None and issuer not in self._signing:
            found.append(f"no signing key of issuer {issuer!r}")
        return found

    def dump(self) -> str:
        return json.dumps({"keys": [k.describe() for k in self._by_kid.values()]}, indent=2)

    # --- reading and making rings ---------------------------------------------------------

    @classmethod
    def parse(cls, text: str, *, source: str = "keys") -> KeyRing:
        try:
            document = json.loads(text)
        except ValueError as error:
            raise KeyRingError(f"{source}: not JSON: {error}") from None
        entries = document.get("keys") if isinstance(document, dict) else document
        if not isinstance(entries, list):
            raise KeyRingError(f'{source}: expected {{"keys": [...]}}')
        return cls(_key(entry, f"{source}: keys[{n}]") for n, entry in enumerate(entries))

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """The ring of ``DESK_KEYS_FILE`` followed by ``DESK_KEYS`` (later keys sign)."""
        keys: list[Key] = []
        if settings.keys_file is not None:
            path = settings.keys_file
            try:
                text = path.read_text("utf-8")
            except OSError as error:
                raise KeyRingError(f"cannot read DESK_KEYS_FILE {path}: {error}") from None
            keys.extend(cls.parse(text, source=str(path)))
        if settings.keys is not None:
            keys.extend(cls.parse(settings.keys.get_secret_value(), source="DESK_KEYS"))
        return cls(keys)

    @classmethod
    def generate(cls, issuers: Mapping[str, Iterable[str]]) -> KeyRing:
        """Fresh random keys, one per issuer, vouching for what ``issuers`` says."""
        return cls(
            Key(
                kid=f"{issuer}-{secrets.token_hex(4)}",
                issuer=issuer,
                vouches=frozenset(vouches),
                secret=secrets.token_bytes(MIN_SECRET_BYTES),
            )
            for issuer, vouches in issuers.items()
        )


def local_key_file(path: Path, issuers: Mapping[str, Iterable[str]]) -> Path:
    """The key file of a local run: created once (mode 0600) with a key per issuer, extended
    with keys of issuers added since, never rewritten otherwise (tokens stay valid)."""
    ring = KeyRing.parse(path.read_text("utf-8"), source=str(path)) if path.exists() else KeyRing()
    missing = {i: v for i, v in issuers.items() if ring.signing_key(i) is None}
    if missing or not path.exists():
        ring = KeyRing([*ring, *KeyRing.generate(missing)])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(ring.dump())
        os.replace(tmp, path)
    return path


def weak_secrets(settings: Settings) -> list[str]:
    """Secret settings (fields named ``*_secret``, e.g. notify's webhook signing secret) left
    empty, at their default, well known or shorter than 32 bytes: refused outside local mode."""
    problems = []
    for name, info in type(settings).model_fields.items():
        if not name.endswith("_secret"):
            continue
        value, default = getattr(settings, name), info.default
        raw = value.get_secret_value() if isinstance(value, SecretStr) else str(value or "")
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        if raw == default or raw.encode() in WELL_KNOWN_SECRETS or len(raw.encode()) < 32:
            problems.append(
                f"{env_name(name, info)} is empty, its default, well known or under 32 bytes"
            )
    return problems


def _key(entry: Any, where: str) -> Key:
    if not isinstance(entry, dict):
        raise KeyRingError(f"{where}: not an object")
    unknown = set(entry) - {"kid", "issuer", "vouches", "secret", "signing"}
    if unknown:
        raise KeyRingError(f"{where}: unknown fields {sorted(unknown)}")
    kid, issuer, secret = entry.get("kid"), entry.get("issuer"), entry.get("secret")
    vouches = entry.get("vouches", [])
    for name, value in (("kid", kid), ("issuer", issuer), ("secret", secret)):
        if not isinstance(value, str) or not value:
            raise KeyRingError(f"{where}: {name} must be a non-empty string")
    assert isinstance(kid, str) and isinstance(issuer, str) and isinstance(secret, str)
    if not isinstance(vouches, list) or not set(vouches) <= VOUCHES:
        raise KeyRingError(f"{where}: vouches must be a list of {sorted(VOUCHES)}")
    try:
        raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    except ValueError:
        raise KeyRingError(f"{where}: secret is not base64url") from None
    return Key(kid, issuer, frozenset(vouches), raw, bool(entry.get("signing", True)))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

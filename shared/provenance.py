"""Who published an event: each event type has one owner, and only its owner's records count.

The services declare what they publish; the service registry derives from that the catalogue
*event type -> owning service* and hands it to the kernel (:func:`use_catalogue`), which names no
service itself. A consumer accepts an event only when

1. the envelope's ``source`` is ``servicedesk/<owner>`` of its type, and
2. the record is sealed by the owner: the relay adds ``desk_kid`` and ``desk_seal``, the
   base64url HMAC-SHA256 of the record value under the owner's key (:mod:`shared.keys`).

Anything else changes nothing and is dead-lettered: ``foreign_source`` for a type published under
another service's name (or with a seal of another issuer), ``unauthenticated`` for a missing,
unknown or wrong seal. The broker's ACLs say who may write a topic; the seal says who wrote the
record, and holds on a broker without ACLs (the embedded one) too.

HMAC, not signatures: one per event costs ~2 µs against ~50 µs to sign and ~100 µs to verify an
Ed25519 signature (``python -m bench.credentials``), on every event of every consumer. The price
is that a verifier holds the owner's secret; a process given every service's key could forge
any service's events. Give each process only the keys it verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping

from shared.deadletter import Reason, Record
from shared.events import Envelope
from shared.keys import Key, KeyRing

KID_HEADER = "desk_kid"
SEAL_HEADER = "desk_seal"
SOURCE_PREFIX = "servicedesk/"

_catalogue: Callable[[], Mapping[str, str]] = dict


def use_catalogue(lookup: Callable[[], Mapping[str, str]]) -> None:
    """Install the catalogue (event type -> owning service); the service registry does."""
    global _catalogue  # noqa: PLW0603 - set once per process, by the registry at import
    _catalogue = lookup


def catalogue() -> Mapping[str, str]:
    return _catalogue()


class Forged(Exception):
    """An event whose producer is not its type's owner; ``reason`` is the dead-letter reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def seal(key: Key, value: bytes) -> list[tuple[str, bytes]]:
    """The headers that make ``value`` an event published by ``key``'s issuer."""
    digest = hmac.digest(key.secret, value, hashlib.sha256)
    return [
        (KID_HEADER, key.kid.encode()),
        (SEAL_HEADER, base64.urlsafe_b64encode(digest).rstrip(b"=")),
    ]


DEAD_LETTER_KID = "dlq_kid"
DEAD_LETTER_SEAL = "dlq_seal"
_DEAD_LETTER_SEALED = (
    "dlq_consumer",
    "dlq_reason",
    "dlq_time",
    "dlq_topic",
    "dlq_partition",
    "dlq_offset",
)
"""What a dead letter's seal covers, beside its value: who dead-lettered what, why and when."""


def repeated(headers: Iterable[tuple[str, bytes]], names: Iterable[str]) -> str | None:
    """The first of ``names`` that ``headers`` hold more than once: a seal is checked against
    one copy and a reader may take another (the first, as ``Record.header`` does), so a record
    repeating what its seal or credential covers is refused rather than read either way."""
    wanted, seen = set(names), set()
    for name, _ in headers:
        if name in wanted:
            if name in seen:
                return name
            seen.add(name)
    return None


def _dead_letter_input(headers: Iterable[tuple[str, bytes]], value: bytes) -> bytes:
    found = dict(headers)
    return b"\0".join(found.get(name, b"") for name in _DEAD_LETTER_SEALED) + b"\0" + value


def seal_dead_letter(
    key: Key, headers: Iterable[tuple[str, bytes]], value: bytes
) -> list[tuple[str, bytes]]:
    """The headers that make a dead letter (its ``dlq_*`` headers and value, as published) one
    ``key``'s issuer wrote: what counts dead letters per service can tell a forged one."""
    digest = hmac.digest(key.secret, _dead_letter_input(headers, value), hashlib.sha256)
    return [
        (DEAD_LETTER_KID, key.kid.encode()),
        (DEAD_LETTER_SEAL, base64.urlsafe_b64encode(digest).rstrip(b"=")),
    ]


def dead_letter_writer(keys: KeyRing, record: Record) -> str | None:
    """The service whose key sealed this dead letter; None when unsealed or the seal is wrong."""
    return _sealer(
        keys,
        record,
        DEAD_LETTER_KID,
        DEAD_LETTER_SEAL,
        lambda key: seal_dead_letter(key, record.headers, record.value),
    )


def sealed_by(keys: KeyRing, record: Record) -> str | None:
    """The issuer whose key sealed ``record``'s value (``desk_kid``, ``desk_seal``, as
    :func:`seal` makes them); None when unsealed, under an unknown key, or the seal is wrong."""
    return _sealer(keys, record, KID_HEADER, SEAL_HEADER, lambda key: seal(key, record.value))


def _sealer(
    keys: KeyRing,
    record: Record,
    kid_header: str,
    seal_header: str,
    sealing: Callable[[Key], list[tuple[str, bytes]]],
) -> str | None:
    """The issuer of the key ``kid_header`` names, if its seal (``sealing``'s second header)
    is the one ``seal_header`` holds."""
    if repeated(record.headers, (kid_header, seal_header, *_DEAD_LETTER_SEALED)):
        return None  # which copy the seal covers is not which one a reader takes
    kid, found = record.header(kid_header), dict(record.headers).get(seal_header)
    key = keys.get(kid) if kid is not None else None
    if key is None or found is None:
        return None
    return key.issuer if hmac.compare_digest(sealing(key)[1][1], found) else None


class Provenance:
    """Checks each consumed event against the catalogue and its seal."""

    def __init__(self, keys: KeyRing, owners: Mapping[str, str]) -> None:
        self.keys = keys
        self.owners = owners

    def check(self, record: Record, envelope: Envelope) -> None:
        """Raise :class:`Forged` unless the record is its owner's."""
        owner = self.owners.get(envelope.type)
        if owner is None:
            raise Forged(Reason.FOREIGN_SOURCE, f"no service publishes {envelope.type}")
        if envelope.source != SOURCE_PREFIX + owner:
            raise Forged(
                Reason.FOREIGN_SOURCE,
                f"{envelope.type} is published by {owner}, not {envelope.source[:80]!r}",
            )
        if twice := repeated(record.headers, (KID_HEADER, SEAL_HEADER)):
            raise Forged(Reason.UNAUTHENTICATED, f"header {twice} more than once")
        kid = record.header(KID_HEADER)
        seal_value = dict(record.headers).get(SEAL_HEADER)
        if kid is None or seal_value is None:
            raise Forged(Reason.UNAUTHENTICATED, "no seal (desk_kid, desk_seal)")
        key = self.keys.get(kid)
        if key is None:
            raise Forged(Reason.UNAUTHENTICATED, f"sealed with an unknown key {kid[:40]!r}")
        if key.issuer != owner:
            raise Forged(
                Reason.FOREIGN_SOURCE, f"{envelope.type} sealed by {key.issuer}, not by {owner}"
            )
        if not hmac.compare_digest(seal(key, record.value)[1][1], seal_value):
            raise Forged(Reason.UNAUTHENTICATED, "the seal does not match the record")

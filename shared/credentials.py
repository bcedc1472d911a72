"""Who is acting: tokens for people, and commands on Kafka that prove whose they are.

**Tokens** are JWTs (HS256, PyJWT) signed with a key of the ring (:mod:`shared.keys`): header
``kid``; claims ``iss`` (the key's issuer), ``sub`` (the actor: an agent id, ``customer``,
``system``, or ``channel:<name>`` for a channel adapter's client), ``aud`` (``servicedesk``),
``iat``, ``exp``, ``jti``; a customer token adds ``ticket`` (the one ticket number it acts on)
and ``commands`` (the command types it may send). A token is accepted only if its issuer may
vouch for its subject: agents — and channel clients, which operators set up as they set up
agents — by an issuer vouching for ``agents`` (the operators' ``desk``), ``customer`` by one
vouching for ``customers`` (notify's signed links), ``system`` only by a service's own key.

**A command on Kafka** carries a proof, never the token itself (a record is read by many and
kept for days): the header ``desk_token`` holds the token's ``header.payload`` and
``desk_proof`` the base64url HMAC-SHA256 of the record's value, keyed by the token's signature
bytes — a derived key, as in AWS SigV4. The verifier recomputes that signature from the
issuer's secret, checks the claims, then the proof. So only the token's holder (or the issuer)
can sign a record with it; a record changed in any byte, or sent again with a new command id,
fails; the same record sent again is the same command id. :func:`sign_command` is the one
signing function every producer of commands uses (``desk``, the demo, the tests, the console).

:func:`read_token` checks signatures and claims, not time; :meth:`Credential.check_time` checks
time against the caller's clock (services run on an injected one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from shared.keys import Key, KeyRing

AUDIENCE = "servicedesk"
ALGORITHM = "HS256"
TOKEN_HEADER = "desk_token"
"""Kafka header: the token's ``header.payload`` (its signing input, not its signature)."""
PROOF_HEADER = "desk_proof"
"""Kafka header: base64url HMAC-SHA256 of the record value, keyed by the token's signature."""
CHANNEL_PREFIX = "channel:"
"""The subject of a channel adapter's client starts with it (``channel:webform``)."""
CLOCK_SKEW = timedelta(minutes=1)
"""How far in the future a token's ``iat`` may be (clocks of issuers and services differ)."""
_REQUIRED = ["iss", "sub", "aud", "iat", "exp", "jti"]


class Unauthenticated(Exception):
    """The credential does not establish who is acting; ``detail`` says why (never a secret)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Credential:
    """A verified token: whose it is, who vouched, for how long, and for what."""

    subject: str
    issuer: str
    kid: str
    issued_at: datetime
    expires_at: datetime
    token_id: str
    ticket: str | None = None
    commands: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``system``, ``customer``, ``channel`` (a ``channel:<name>`` client posting customers'
        requests: a web form, an API client) or ``agent``: what the subject is."""
        if self.subject in ("system", "customer"):
            return self.subject
        return "channel" if self.subject.startswith(CHANNEL_PREFIX) else "agent"

    def check_time(self, now: datetime, max_ttl: timedelta) -> None:
        """Raise :class:`Unauthenticated` unless the token is valid at ``now``.

        ``max_ttl`` bounds a token's lifetime: it stays below the time consumers remember
        processed command ids, so a command replayed after its id is forgotten is expired.
        """
        if now >= self.expires_at:
            raise Unauthenticated(f"token expired at {self.expires_at.isoformat()}")
        if self.issued_at > now + CLOCK_SKEW:
            raise Unauthenticated("token issued in the future")
        if self.expires_at - self.issued_at > max_ttl:
            raise Unauthenticated(f"token lives longer than the allowed {max_ttl}")


def issue_token(
    key: Key,
    subject: str,
    *,
    now: datetime,
    ttl: timedelta,
    ticket: str | None = None,
    commands: Iterable[str] = (),
) -> str:
    """A token for ``subject`` signed with ``key`` (its issuer must be able to vouch for it)."""
    claims: dict[str, Any] = {
        "iss": key.issuer,
        "sub": subject,
        "aud": AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": str(uuid.uuid4()),
    }
    if ticket is not None:
        claims["ticket"] = ticket
        claims["commands"] = list(commands)
    _vouched(key, subject, ticket)
    return jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})


def read_token(ring: KeyRing, token: str) -> Credential:
    """Check a token's signature, audience, issuer and claims (not its time)."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError as error:
        raise Unauthenticated(f"not a token: {error}") from None
    key = ring.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise Unauthenticated(f"unknown key {str(kid)[:40]!r}")
    try:
        claims = jwt.decode(
            token,
            key.secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=key.issuer,
            options={
                "verify_exp": False,  # against the caller's clock, in check_time
                "verify_iat": False,
                "verify_nbf": False,
                "require": _REQUIRED,
            },
        )
    except jwt.PyJWTError as error:
        raise Unauthenticated(f"token refused: {error}") from None
    credential = _credential(claims, key)
    _vouched(key, credential.subject, credential.ticket)
    return credential


def verify_bearer(ring: KeyRing, token: str, *, now: datetime, max_ttl: timedelta) -> Credential:
    """A bearer token of an HTTP request (the console): signature, claims and time."""
    credential = read_token(ring, token)
    credential.check_time(now, max_ttl)
    return credential


def sign_command(token: str, value: bytes) -> list[tuple[str, bytes]]:
    """The Kafka headers that make ``value`` a command of the token's subject."""
    signing_input, _, signature = token.rpartition(".")
    if not signing_input or signing_input.count(".") != 1:
        raise ValueError("not a JWT (header.payload.signature)")
    return [
        (TOKEN_HEADER, signing_input.encode()),
        (PROOF_HEADER, _proof(_unb64(signature), value)),
    ]


class CommandVerifier:
    """Checks commands against one key ring, remembering the tokens it has read.

    An agent's desk signs many commands with one token: its claims are read (PyJWT, ≈ 0.1 ms)
    once, then each record costs two HMACs. Only tokens that verified are remembered, by their
    exact ``header.payload``; time is checked at every use (:meth:`Credential.check_time`).
    """

    def __init__(self, ring: KeyRing, remember: int = 4096) -> None:
        self.ring = ring
        self.remember = remember
        self._read: OrderedDict[bytes, tuple[Credential, bytes]] = OrderedDict()

    def authenticate(self, headers: Sequence[tuple[str, bytes]], value: bytes) -> Credential:
        """Whose command a record is, from its ``desk_token`` and ``desk_proof`` headers.

        Raises :class:`Unauthenticated` for a missing, malformed, forged or unknown-key token
        and for a value that is not the one the token's holder signed.
        """
        names = [name for name, _ in headers]
        if names.count(TOKEN_HEADER) > 1 or names.count(PROOF_HEADER) > 1:
            raise Unauthenticated(f"{TOKEN_HEADER} or {PROOF_HEADER} more than once")
        found = dict(headers)
        signing_input = found.get(TOKEN_HEADER)
        proof = found.get(PROOF_HEADER)
        if signing_input is None or proof is None:
            raise Unauthenticated(f"no credential (headers {TOKEN_HEADER} and {PROOF_HEADER})")
        known = self._read.get(signing_input)
        if known is None:
            known = self._read_token(signing_input)
            self._read[signing_input] = known
            if len(self._read) > self.remember:
                self._read.popitem(last=False)
        credential, signature = known
        if not hmac.compare_digest(_proof(signature, value), proof):
            raise Unauthenticated("the record does not match its proof (changed, or not signed)")
        return credential

    def _read_token(self, signing_input: bytes) -> tuple[Credential, bytes]:
        """The token's claims, and its signature recomputed from the issuer's key."""
        try:
            text = signing_input.decode("ascii")
            header = json.loads(_unb64(text.partition(".")[0]))
        except (UnicodeDecodeError, ValueError, RecursionError):  # deep JSON: no header either
            raise Unauthenticated(f"{TOKEN_HEADER} is not a token's header.payload") from None
        kid = header.get("kid") if isinstance(header, dict) else None
        key = self.ring.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthenticated(f"unknown key {str(kid)[:40]!r}")
        signature = hmac.digest(key.secret, signing_input, hashlib.sha256)
        return read_token(self.ring, f"{text}.{_b64(signature)}"), signature


def authenticate_command(
    ring: KeyRing, headers: Sequence[tuple[str, bytes]], value: bytes
) -> Credential:
    """:meth:`CommandVerifier.authenticate` of one record (nothing remembered)."""
    return CommandVerifier(ring, remember=0).authenticate(headers, value)


def _proof(signature: bytes, value: bytes) -> bytes:
    return _b64(hmac.digest(signature, value, hashlib.sha256)).encode()


def _vouched(key: Key, subject: str, ticket: str | None) -> None:
    """Refuse a subject the key's issuer may not vouch for."""
    if subject == "system":
        allowed = "system" in key.vouches and ticket is None
    elif subject == "customer":
        allowed = "customers" in key.vouches and ticket is not None
    else:
        allowed = "agents" in key.vouches and ticket is None
    if not allowed:
        raise Unauthenticated(f"issuer {key.issuer} may not vouch for {subject!r}")


def _credential(claims: dict[str, Any], key: Key) -> Credential:
    subject, ticket, commands = claims["sub"], claims.get("ticket"), claims.get("commands", [])
    if not isinstance(subject, str) or not subject or len(subject) > 120:
        raise Unauthenticated("sub must be an actor id")
    if ticket is not None and not isinstance(ticket, str):
        raise Unauthenticated("ticket must be a ticket number")
    if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
        raise Unauthenticated("commands must be a list of command types")
    try:
        issued = datetime.fromtimestamp(claims["iat"], tz=UTC)
        expires = datetime.fromtimestamp(claims["exp"], tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise Unauthenticated("iat and exp must be times") from None
    return Credential(
        subject=subject,
        issuer=key.issuer,
        kid=key.kid,
        issued_at=issued,
        expires_at=expires,
        token_id=str(claims["jti"]),
        ticket=ticket,
        commands=tuple(commands),
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

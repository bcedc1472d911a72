"""Who is calling: the bearer token of a request, verified against the key ring.

Tokens are those of the security contract (``docs/security.md``): an agent's from the operators'
key (``desk token issue AGENT_ID``), a customer's from notify's signed survey link. A desk sends
the same token with every request, so a token that verified once is remembered (its claims; its
time is checked at every request against the service's clock), as dispatch remembers the tokens
of commands. The browser pages carry the token in an HttpOnly cookie instead of a header: reads
accept either; commands only the header, so another site cannot make a browser send one.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta

from shared.credentials import Credential, Unauthenticated, read_token
from shared.keys import KeyRing

COOKIE = "desk_token"
MAX_TOKEN_CHARS = 4096


class Callers:
    def __init__(self, ring: KeyRing, max_ttl: timedelta, remember: int = 4096) -> None:
        self.ring = ring
        self.max_ttl = max_ttl
        self.remember = remember
        self._read: OrderedDict[str, Credential] = OrderedDict()
        self._seen: datetime | None = None
        """The service's clock as a request last read it."""

    def read(self, token: str | None) -> Credential:
        """The token's credential, its signature and claims checked; else
        :class:`Unauthenticated`. CPU only: callers check it before they take a connection
        (which the clock needs), so forged tokens cannot empty the pool — nor genuine ones that
        live too long, or had expired when a request last read the clock (an old survey link
        sent again and again). Whether it is valid now is :meth:`check_time`'s, on the clock."""
        if not token:
            raise Unauthenticated("no bearer token (Authorization: Bearer <token>)")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("not a token (too long)")
        credential = self._read.get(token)
        if credential is None:
            credential = read_token(self.ring, token)
            self._read[token] = credential
            if len(self._read) > self.remember:
                self._read.popitem(last=False)
        if credential.expires_at - credential.issued_at > self.max_ttl:
            raise Unauthenticated(f"token lives longer than the allowed {self.max_ttl}")
        if self._seen is not None and credential.expires_at <= self._seen:
            raise Unauthenticated(f"token expired at {credential.expires_at.isoformat()}")
        return credential

    def check_time(self, credential: Credential, now: datetime) -> Credential:
        """``credential`` if it is valid at ``now`` (the service's clock); else
        :class:`Unauthenticated`."""
        self._seen = now  # the latest reading, not the greatest: a clock set back is obeyed
        credential.check_time(now, self.max_ttl)
        return credential


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header; None for no header, another scheme
    or a blank token, never "": a caller testing for None would take "" for a token."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def token_of(authorization: str | None, cookie: str | None) -> str | None:
    """A read's token: the header's whenever the request has one — a header without a usable
    token is refused (401), never made up for by the cookie — and the cookie's only without."""
    if authorization is not None:
        return bearer(authorization)
    return cookie

"""Outbound HTTP endpoints (webhooks, the SMS provider): where servicedesk may send requests.

An endpoint is an ``http`` or ``https`` URL. It must not reach into the deployment's own networks
— private, loopback, link-local, shared and reserved ranges — unless a setting allows it
(``DESK_ALLOW_PRIVATE_ENDPOINTS``; local mode allows loopback, where the local receivers live).
Otherwise whoever edits a webhook address could make notify probe the internal network, the
cloud's metadata service or PostgreSQL itself.

Checked twice: when the address is configured (:func:`check_endpoint`: a URL httpx can send to,
its scheme and host, and a literal address or ``localhost``; a policy or settings file with an
address of the wrong form is refused as it loads, before the settings' rule: :data:`ANY_NETWORK`),
and when a request is sent (:func:`pin`: the host's DNS answers, all of them, since a public name
may resolve to a private address). The request then goes to the very
address that was checked (TLS still verifies the host name), so a second DNS answer cannot
change it in between.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from shared.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class EndpointRefused(ValueError):
    """Not an address servicedesk may send to; the message says why."""


@dataclass(frozen=True)
class EndpointRule:
    """Which non-public addresses are allowed."""

    allow_private: bool = False
    allow_loopback: bool = False

    @classmethod
    def of(cls, settings: Settings) -> EndpointRule:
        allow = settings.allow_private_endpoints
        return cls(allow_private=allow, allow_loopback=allow or settings.local_mode)

    def check_address(self, address: Address) -> None:
        if isinstance(address, ipaddress.IPv6Address):
            if address in _NAT64_LOCAL and not self.allow_private:
                raise EndpointRefused(f"{address} is in a local NAT64 prefix")
            address = _embedded_ipv4(address) or address
        if address.is_loopback:
            if not self.allow_loopback:
                raise EndpointRefused(f"{address} is a loopback address")
        elif not address.is_global and not self.allow_private:
            raise EndpointRefused(f"{address} is a private, link-local or reserved address")


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches through a translator or a tunnel — mapped
    (``::ffff:a.b.c.d``), NAT64 (``64:ff9b::a.b.c.d``), 6to4 (``2002:AABB:CCDD::``), or the
    deprecated compatible form (``::a.b.c.d``) — which is what must be public: Python calls
    ``64:ff9b::a9fe:a9fe`` global, yet on a NAT64 network it is the metadata service."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


ANY_NETWORK = EndpointRule(allow_private=True, allow_loopback=True)
"""The form of an address only: what a policy or settings file is checked for when it loads,
before the settings say which networks are allowed."""


def check_endpoint(url: str, rule: EndpointRule) -> str:
    """Refuse what can be refused without DNS; return the URL's host."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
        httpx.URL(url)  # what the sender will parse: an address it refuses is refused now
    except (ValueError, httpx.InvalidURL) as error:
        raise EndpointRefused(f"not a URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise EndpointRefused(f"scheme {parts.scheme!r}: only http and https")
    if not host:
        raise EndpointRefused("no host")
    if host == "localhost" or host.endswith(".localhost"):
        rule.check_address(ipaddress.ip_address("127.0.0.1"))
    else:
        literal = _literal(host)
        if literal is not None:
            rule.check_address(literal)
    return host


@dataclass(frozen=True)
class Pinned:
    """A request target bound to one checked address: send to ``url`` with these headers and
    httpx request extensions (the TLS server name stays the original host)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


async def pin(url: str, rule: EndpointRule) -> Pinned:
    """Resolve the URL's host, refuse it if any answer is not allowed, and bind the request to
    the first answer. Raises :class:`EndpointRefused`, or ``OSError`` when DNS fails."""
    host = check_endpoint(url, rule)
    if _literal(host) is not None:
        return Pinned(url)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    answers = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    addresses = [ipaddress.ip_address(str(a[4][0]).split("%", 1)[0]) for a in answers]
    if not addresses:
        raise OSError(f"{host} has no address")
    for address in addresses:
        try:
            rule.check_address(address)
        except EndpointRefused as refused:
            raise EndpointRefused(f"{host} resolves to {refused}") from None
    first = addresses[0]
    literal = f"[{first}]" if first.version == 6 else str(first)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    host_header = f"{host}:{parts.port}" if parts.port else host
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return Pinned(urlunsplit(parts._replace(netloc=netloc)), {"host": host_header}, extensions)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None

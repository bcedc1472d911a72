"""Outbound endpoints: http(s) only, and never into private networks unless a setting allows."""

from __future__ import annotations

import pytest

from shared.endpoints import EndpointRefused, EndpointRule, check_endpoint, pin
from tests.support.dns import resolve_to

pytestmark = pytest.mark.unit

PRODUCTION, LOCAL, PRIVATE = EndpointRule(), EndpointRule(allow_loopback=True), EndpointRule(True)

REFUSED = [
    ("file:///etc/passwd", "only http and https"),
    ("gopher://example.com/", "only http and https"),
    ("http://[::1", "not a URL"),
    ("https:///path", "no host"),
    ("http://127.0.0.1:5432/", "loopback"),
    ("http://localhost/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("http://192.168.0.10/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://100.64.0.1/hook", "private"),  # shared address space
    ("http://0.0.0.0/hook", "private"),
    # IPv4 reached through a translator or a tunnel is checked as the IPv4 it reaches
    ("http://[64:ff9b::a9fe:a9fe]/latest/meta-data/", "link-local"),  # NAT64
    ("http://[64:ff9b::a00:5]:5432/", "private"),
    ("http://[64:ff9b::7f00:1]/hook", "loopback"),
    ("http://[64:ff9b:1::a00:5]/hook", "local NAT64"),
    ("http://[2002:a9fe:a9fe::]/hook", "link-local"),  # 6to4
    ("http://[::a9fe:a9fe]/hook", "link-local"),  # IPv4-compatible
]


@pytest.mark.parametrize(("url", "why"), REFUSED, ids=[u for u, _ in REFUSED])
def test_outside_local_mode_only_public_http_endpoints_are_allowed(url: str, why: str) -> None:
    with pytest.raises(EndpointRefused, match=why):
        check_endpoint(url, PRODUCTION)


def test_local_mode_allows_loopback_and_the_setting_allows_private_ranges() -> None:
    assert check_endpoint("http://127.0.0.1:9000/hook", LOCAL) == "127.0.0.1"
    assert check_endpoint("http://localhost/hook", LOCAL) == "localhost"
    with pytest.raises(EndpointRefused, match="private"):
        check_endpoint("http://10.1.2.3/hook", LOCAL)
    assert check_endpoint("http://10.1.2.3/hook", PRIVATE) == "10.1.2.3"
    assert check_endpoint("https://hooks.example.com/a", PRODUCTION) == "hooks.example.com"
    assert check_endpoint("http://[64:ff9b::5db8:d822]/", PRODUCTION) == "64:ff9b::5db8:d822"
    assert check_endpoint("http://[2606:4700::1111]/", PRODUCTION) == "2606:4700::1111"


@pytest.mark.asyncio
async def test_a_name_is_checked_by_what_it_resolves_to_and_the_request_is_bound_to_it() -> None:
    with pytest.raises(EndpointRefused, match="loopback"):
        await pin("http://localhost:8080/hook", PRODUCTION)
    pinned = await pin("http://localhost:8080/hook?x=1", LOCAL)
    assert pinned.url in ("http://127.0.0.1:8080/hook?x=1", "http://[::1]:8080/hook?x=1")
    assert pinned.headers == {"host": "localhost:8080"}
    secure = await pin("https://localhost/hook", LOCAL)
    assert secure.extensions == {"sni_hostname": "localhost"}, "TLS still checks the name"
    assert (await pin("http://127.0.0.1/x", LOCAL)).url == "http://127.0.0.1/x"


@pytest.mark.asyncio
async def test_a_public_name_is_refused_when_it_resolves_into_a_private_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS decides at send time: a name that passes when configured, answered with a private
    address (a rebinding), is refused then."""
    resolve_to(monkeypatch, "hooks.example.com", "10.0.0.7")
    assert check_endpoint("https://hooks.example.com/h", PRODUCTION) == "hooks.example.com"
    with pytest.raises(EndpointRefused, match=r"hooks\.example\.com resolves to 10\.0\.0\.7"):
        await pin("https://hooks.example.com/h", PRODUCTION)
    pinned = await pin("https://hooks.example.com/h", PRIVATE)
    assert pinned.url == "https://10.0.0.7/h"
    assert pinned.extensions == {"sni_hostname": "hooks.example.com"}

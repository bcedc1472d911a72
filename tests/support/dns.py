"""DNS answers a test decides (there is no DNS server here to lie for us)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest


def resolve_to(monkeypatch: pytest.MonkeyPatch, name: str, address: str) -> None:
    """Answer DNS queries for ``name`` with ``address`` (no DNS server here to lie for us)."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> Any:
        if host == name:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return await real(host, port, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)

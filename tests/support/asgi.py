"""Calling an ASGI app as a server would, to watch what it does while an answer is written."""

from __future__ import annotations

from typing import Any


def get_scope(
    path: str, query: bytes = b"", headers: tuple[tuple[bytes, bytes], ...] = ()
) -> dict[str, Any]:
    """The scope of a plain HTTP/1.1 ``GET path?query`` from a local client."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"service"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


async def no_body() -> dict[str, Any]:
    """``receive`` of a request without a body."""
    return {"type": "http.request", "body": b"", "more_body": False}

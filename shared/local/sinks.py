"""Local receivers for notices: an SMTP server (aiosmtpd) and an HTTP server, each in a thread.

``desk up`` starts the SMTP sink when no mail server is configured, so the acknowledgements of
the demo traffic land in ``.desk/mail/`` as ``.eml`` files instead of failing, and the HTTP sink
as the SMS provider when none is configured (``.desk/sms/*.json``). Tests and
benchmarks use both: they count what arrives, can refuse for a while, and say what they saw, so
a test asserts on what reached the other side of the wire, not on what notify believes it sent.
"""

from __future__ import annotations

import email
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage as Message
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from shared.local.ports import free_port


@dataclass
class SmtpServer:
    """Accepts mail on a loopback port; the first ``refuse`` messages get a 451. With a
    ``mailbox`` folder each message is also written there, after what it already holds;
    ``keep=False`` keeps no copy in memory (for long runs)."""

    refuse: int = 0
    messages: list[Message] = field(default_factory=list)
    refused: int = 0
    accepted: int = 0
    port: int = 0
    mailbox: Path | None = None
    keep: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _filed: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            if self.refused < self.refuse:
                self.refused += 1
                return "451 4.3.0 try again later"
            self.accepted += 1
            if self.keep:
                self.messages.append(
                    email.message_from_bytes(envelope.content, _class=Message, policy=default)
                )
            if self.mailbox is not None:
                self._filed = _file_away(self.mailbox, envelope.content, self._filed)
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if address in str(m["To"])]


def _file_away(mailbox: Path, content: bytes, after: int) -> int:
    """Write a message as the first free ``NNNNNNN.eml`` numbered above ``after`` (and above
    every message already there when ``after`` is 0); return its number.

    The numbers go on across restarts, and a name is only ever created, never reused
    (``O_EXCL``): mail a user kept from an earlier run, or another sink's, is never overwritten.
    """
    mailbox.mkdir(parents=True, exist_ok=True)
    if not after:
        after = max((int(p.stem) for p in mailbox.glob("*.eml") if p.stem.isdigit()), default=0)
    number = after + 1
    while True:
        try:
            with (mailbox / f"{number:07d}.eml").open("xb") as out:
                out.write(content)
        except FileExistsError:
            number += 1
            continue
        return number


@contextmanager
def smtp_server(
    refuse: int = 0, *, mailbox: Path | None = None, keep: bool = True
) -> Iterator[SmtpServer]:
    server = SmtpServer(refuse=refuse, port=free_port(), mailbox=mailbox, keep=keep)
    # aiosmtpd logs every SMTP command at INFO: a line per command per notice.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(server, hostname="127.0.0.1", port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Records every POST; paths in ``failing`` always answer 500, those in ``answers`` their
    status and body, paths in ``slow`` answer only after so many seconds (or once ``release``
    is called). With a ``folder`` each body is also written there; ``keep=False`` keeps no copy
    in memory (for long runs)."""

    port: int
    failing: set[str] = field(default_factory=set)
    answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    slow: dict[str, float] = field(default_factory=dict)
    released: threading.Event = field(default_factory=threading.Event)
    requests: list[Request] = field(default_factory=list)
    folder: Path | None = None
    keep: bool = True
    received: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def all(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def release(self) -> None:
        """Answer every slow request now, and the later ones at once."""
        self.released.set()


@contextmanager
def http_receiver(
    failing: set[str] | None = None, *, folder: Path | None = None, keep: bool = True
) -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(port=free_port(), failing=failing or set(), folder=folder, keep=keep)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length)
            request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with receiver._lock:
                receiver.received += 1
                if receiver.keep:
                    receiver.requests.append(request)
                if receiver.folder is not None:
                    receiver.folder.mkdir(parents=True, exist_ok=True)
                    (receiver.folder / f"{receiver.received:07d}.json").write_bytes(body)
            if self.path in receiver.slow:
                receiver.released.wait(receiver.slow[self.path])
            status, answer = receiver.answers.get(self.path, (200, b""))
            if self.path in receiver.failing:
                status = 500
            self.send_response(status)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release()
        server.shutdown()
        server.server_close()

"""The far side of notify's wires, in a process of its own: an SMTP server and an HTTP receiver
(webhooks and SMS) that journal every message they accept — its notice key (``X-Desk-Notice``
of a mail, ``Idempotency-Key`` of a request), channel, recipient and arrival time — one JSON
line each in ``<dir>/received.jsonl``.

Its own process, so what the system under test does to its own processes (kills, restarts,
pauses) never touches the count, and the count is what really crossed the wire, repeats
included. ``python -m tests.support.receivers DIR`` writes ``DIR/ports.json``
(``{"smtp": port, "http": port}``) once both listen, and runs until SIGTERM.
:class:`Receivers` starts one and reads its journal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Received:
    """One message a receiver accepted."""

    channel: str
    """``email`` or the HTTP path's first part (``agents``, ``sms``…)."""
    key: str
    to: str
    at: float
    """Wall time (``time.time()``) of its arrival."""


@dataclass
class Receivers:
    """The receivers' process, seen from the harness."""

    folder: Path
    process: subprocess.Popen[bytes]
    smtp_port: int
    http_port: int
    _offset: int = 0
    _seen: list[Received] = field(default_factory=list)

    @classmethod
    def start(cls, folder: Path, timeout: float = 30.0) -> Receivers:
        """Start the receivers' process; return once both servers listen."""
        folder.mkdir(parents=True, exist_ok=True)
        ports = folder / "ports.json"
        ports.unlink(missing_ok=True)
        with (folder / "receivers.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.receivers", str(folder)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not ports.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"receivers did not start; see {folder / 'receivers.log'}")
            time.sleep(0.05)
        listening = json.loads(ports.read_text())
        return cls(folder, process, listening["smtp"], listening["http"])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def received(self) -> list[Received]:
        """Everything accepted so far (the journal is read on from where it was left)."""
        journal = self.folder / "received.jsonl"
        if journal.exists():
            with journal.open("rb") as lines:
                lines.seek(self._offset)
                chunk = lines.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._offset += len(complete)
            for line in complete.splitlines():
                self._seen.append(Received(**json.loads(line)))
        return list(self._seen)

    def counts(self) -> Counter[str]:
        """Notice key -> how many times it arrived."""
        return Counter(r.key for r in self.received())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- the receivers' process ---------------------------------------------------------------


class _Journal:
    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, channel: str, key: str, to: str) -> None:
        line = json.dumps({"channel": channel, "key": key, "to": to, "at": time.time()})
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


class _Mail:
    def __init__(self, journal: _Journal) -> None:
        self.journal = journal

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=default)
        # A long key is folded onto a continuation line (RFC 5322): its leading space is
        # folding, not part of the key.
        key = str(message.get("X-Desk-Notice") or message.get("Message-ID") or "").strip()
        self.journal.write("email", key, str(message.get("To", "")))
        return "250 OK"


def _serve(folder: Path) -> None:
    from aiosmtpd.controller import Controller

    from shared.local.ports import free_port

    journal = _Journal(folder / "received.jsonl")
    smtp_port = free_port()
    mail = Controller(_Mail(journal), hostname="127.0.0.1", port=smtp_port)
    mail.start()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            self.rfile.read(length)
            channel = self.path.strip("/").split("/", 1)[0] or "http"
            journal.write(channel, self.headers.get("idempotency-key", ""), self.path)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    ports = folder / "ports.json"
    ports.with_suffix(".tmp").write_text(
        json.dumps({"smtp": smtp_port, "http": http.server_address[1]})
    )
    os.replace(ports.with_suffix(".tmp"), ports)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    http.shutdown()
    mail.stop()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]))

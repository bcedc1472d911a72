"""Webhooks as sent: a name resolving into a network notify may not reach is refused at send
time (a permanent failure, nothing sent); connections are kept alive; redirects are not
followed; answers are judged by status, read only up to a bound, and waited for only so long.
A send, whatever its channel, takes at most the send timeout all told."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.notify.channels import (
    RESPONSE_BODY_LIMIT,
    Channels,
    Outcome,
    Permanent,
    Sent,
    Transient,
)
from services.notify.settings import NotifySettings
from services.notify.sms import segments
from services.notify.storage import Delivery
from shared.local.sinks import http_receiver
from tests.support.dns import resolve_to


def webhook(address: str) -> Delivery:
    return Delivery(1, "k:1", "t", "REQ-2026-000001", "e", "agent:li.na", "webhook", address,
                    "assigned", "zh", "subject", "body", "v", 0)  # fmt: skip


@pytest.mark.asyncio
async def test_a_webhook_resolving_to_loopback_is_refused_outside_local_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolve_to(monkeypatch, "hooks.example.com", "127.0.0.1")
    with http_receiver() as receiver:
        address = f"http://hooks.example.com:{receiver.port}/agents/li.na"
        production = Channels(NotifySettings(local_mode=False), "desk", "desk@example.com")
        local = Channels(NotifySettings(local_mode=True), "desk", "desk@example.com")
        try:
            refused = await production.send(webhook(address))
            assert receiver.all() == [], "nothing reached the address"
            sent = await local.send(webhook(address))
        finally:
            await production.close()
            await local.close()
    assert isinstance(refused, Permanent) and "loopback" in refused.error, refused
    assert isinstance(sent, Sent)
    [request] = receiver.at("/agents/li.na")
    assert request.headers["host"] == f"hooks.example.com:{receiver.port}"


class Canned:
    """A loopback HTTP/1.1 server answering every request with one canned response; it counts
    connections and requests, and ``silent`` never answers."""

    def __init__(
        self, response: bytes, *, silent: bool = False, tls: ssl.SSLContext | None = None
    ) -> None:
        self.response, self.silent, self.tls = response, silent, tls
        self.connections = self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._closing = asyncio.Event()

    async def __aenter__(self) -> Canned:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._closing.set()
        self._server.close()

    def url(self, path: str = "/agents/li.na") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")),
                    0,
                )  # fmt: skip
                await reader.readexactly(length)
                self.requests += 1
                if self.silent:
                    await self._closing.wait()
                    return
                writer.write(self.response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answer(status: str, body: bytes = b"", *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"content-length: {len(body)}", *headers]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


class SlowRelay:
    """A loopback SMTP server that answers each command ``delay`` seconds after it came: every
    exchange is well within a timeout that the whole conversation is not."""

    def __init__(
        self, delay: float, *, data_answer: bytes = b"250 accepted", hang_up: str = ""
    ) -> None:
        self.delay = delay
        self.data_answer = data_answer
        self.hang_up = hang_up
        """``"before answering"`` DATA (the message taken, its answer lost), or ``"after
        sending"`` (an idle connection the relay closes)."""
        self.recipients: list[bytes] = []
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> SlowRelay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def say(line: bytes) -> None:
            await asyncio.sleep(self.delay)
            writer.write(line + b"\r\n")
            await writer.drain()

        try:
            await say(b"220 slow.example ESMTP")
            while line := await reader.readline():
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb == b"DATA":
                    await say(b"354 end with a dot")
                    while (await reader.readline()) not in (b".\r\n", b""):
                        pass
                    self.accepted += self.data_answer.startswith(b"250")
                    if self.hang_up == "before answering":
                        break
                    await say(self.data_answer)
                    if self.hang_up == "after sending":
                        break
                elif verb == b"RCPT":
                    self.recipients.append(line.strip())
                    await say(b"250 OK")
                elif verb == b"QUIT":
                    await say(b"221 bye")
                    break
                else:
                    await say(b"250 OK")
        except ConnectionError:
            pass
        finally:
            writer.close()


def email(address: str) -> Delivery:
    return Delivery(1, "k:1", "t", "REQ-2026-000001", "e", "customer", "email", address,
                    "acknowledged", "en", "subject", "body", "v", 0)  # fmt: skip


def local_channels(**settings: Any) -> Channels:
    return Channels(NotifySettings(local_mode=True, **settings), "desk", "desk@example.com")


@pytest.mark.asyncio
async def test_webhooks_reuse_one_kept_alive_connection() -> None:
    async with Canned(answer("200 OK")) as server:
        channels = local_channels()
        try:
            outcomes = [await channels.send(webhook(server.url())) for _ in range(3)]
        finally:
            await channels.close()
    assert outcomes == [Sent()] * 3
    assert (server.requests, server.connections) == (3, 1)


@pytest.mark.asyncio
async def test_a_redirect_is_not_followed_and_fails_for_good() -> None:
    async with Canned(answer("200 OK")) as elsewhere:
        moved = answer("302 Found", b"", f"location: {elsewhere.url('/stolen')}")
        async with Canned(moved) as server:
            channels = local_channels()
            try:
                outcome = await channels.send(webhook(server.url()))
            finally:
                await channels.close()
    assert isinstance(outcome, Permanent) and outcome.error.startswith("HTTP 302"), outcome
    assert elsewhere.requests == 0


@pytest.mark.asyncio
async def test_a_server_error_is_retried_later_with_the_start_of_its_answer() -> None:
    async with Canned(answer("503 Service Unavailable", b"busy " * 100)) as server:
        channels = local_channels()
        try:
            outcome = await channels.send(webhook(server.url()))
        finally:
            await channels.close()
    assert isinstance(outcome, Transient), outcome
    assert (outcome.error, outcome.answer) == ("HTTP 503", "busy " * 40)


@pytest.mark.asyncio
async def test_an_endless_answer_is_read_only_up_to_its_bound() -> None:
    """A receiver answering 4 MiB: read 64 KiB, the connection dropped, the next send fine."""
    huge = RESPONSE_BODY_LIMIT * 64
    async with Canned(answer("400 Bad Request", b"x" * huge)) as server:
        channels = local_channels()
        try:
            first = await channels.send(webhook(server.url()))
            second = await channels.send(webhook(server.url()))
        finally:
            await channels.close()
    assert isinstance(first, Permanent) and (first.error, first.answer) == ("HTTP 400", "x" * 200)
    assert second == first
    assert (server.requests, server.connections) == (2, 2), "an unread answer is not reused"


@pytest.mark.asyncio
async def test_a_receiver_that_never_answers_times_out_as_transient() -> None:
    async with Canned(b"", silent=True) as server:
        channels = local_channels(notify_send_timeout="300ms")
        try:
            started = time.monotonic()
            outcome = await channels.send(webhook(server.url()))
            waited = time.monotonic() - started
        finally:
            await channels.close()
    assert isinstance(outcome, Transient), outcome
    assert waited < 5, "bounded by notify_send_timeout"


async def timed_send(channels: Channels) -> tuple[Outcome, float]:
    """An acknowledgement's outcome, and the seconds it took."""
    started = time.monotonic()
    outcome = await channels.send(email("c1@example.com"))
    return outcome, time.monotonic() - started


def channels_to(relay: SlowRelay, connections: int = 4) -> Channels:
    return local_channels(
        smtp_host="127.0.0.1",
        smtp_port=relay.port,
        notify_send_timeout="1s",
        smtp_connections=connections,
    )


@pytest.mark.asyncio
async def test_an_email_send_is_bounded_as_a_whole_not_exchange_by_exchange() -> None:
    """Six exchanges of 0.4 s each against a 1 s timeout: each would pass alone, but the send
    must end within the one timeout the lease allows for it (else a send still going when its
    lease ends is claimed and sent a second time)."""
    async with SlowRelay(delay=0.4) as relay:
        channels = channels_to(relay)
        try:
            outcome, waited = await timed_send(channels)
            relay.delay = 0  # the next send finds the relay quick again: it is sent
            again = await channels.send(email("c1@example.com"))
        finally:
            await channels.close()
    assert isinstance(outcome, Transient), outcome
    assert waited < 1.8, f"the send took {waited:.1f} s"
    assert again == Sent() and relay.accepted == 1


@pytest.mark.asyncio
async def test_a_message_whose_answer_was_lost_is_not_sent_again_in_the_same_attempt() -> None:
    """The relay took the message and the connection dropped before its answer: it may be
    queued there, so it is a failure to retry later (the lease), not a second message now.
    A connection the relay closed while idle is still found and reopened before a send."""
    async with SlowRelay(delay=0, hang_up="before answering") as relay:
        channels = channels_to(relay)
        try:
            lost = await channels.send(email("c1@example.com"))
        finally:
            await channels.close()
    assert isinstance(lost, Transient), lost
    assert relay.accepted == 1, "one message on the relay, not two"
    async with SlowRelay(delay=0, hang_up="after sending") as relay:
        channels = channels_to(relay, connections=1)
        try:
            sent = [await channels.send(email(f"c{n}@example.com")) for n in range(3)]
        finally:
            await channels.close()
    assert sent == [Sent()] * 3 and relay.accepted == 3


@pytest.mark.asyncio
async def test_a_relay_that_never_answers_holds_a_send_no_longer_than_the_timeout() -> None:
    """The SMTP client has no deadline of its own (each exchange is bounded only by the whole
    send's): a relay that takes the connection and says nothing still ends the send at the
    timeout, as a failure to try again, and a relay gone silent after a send does not hold
    the service's stop past one timeout either, however many connections are open to it."""
    async with SlowRelay(delay=60) as relay:
        channels = channels_to(relay)
        try:
            outcome, waited = await timed_send(channels)
        finally:
            await channels.close()
    assert isinstance(outcome, Transient), outcome
    assert waited < 1.8, f"the send took {waited:.1f} s"
    async with SlowRelay(delay=0) as relay:
        channels = channels_to(relay, connections=3)
        sends = [channels.send(email(f"c{n}@example.com")) for n in range(3)]
        assert await asyncio.gather(*sends) == [Sent()] * 3  # three connections open
        relay.delay = 60  # QUIT goes unanswered: each connection's bounded, all at once
        started = time.monotonic()
        await channels.close()
        closing = time.monotonic() - started
    assert closing < 1.8, f"closing took {closing:.1f} s"


def certificate(
    name: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
    )
    if name == issuer:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
    return builder.sign(signer, hashes.SHA256())


def tls_serving(folder: Path, name: str) -> tuple[ssl.SSLContext, Path]:
    """A server context with a certificate for ``name`` from a new authority, and the
    authority's certificate (a trust store)."""
    authority, leaf = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    pem = serialization.Encoding.PEM
    folder.mkdir()
    trust = folder / "authority.pem"
    trust.write_bytes(certificate("Test CA", authority, "Test CA", authority).public_bytes(pem))
    chain, secret = folder / "leaf.pem", folder / "leaf.key"
    chain.write_bytes(certificate(name, leaf, "Test CA", authority).public_bytes(pem))
    secret.write_bytes(
        leaf.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain, secret)
    return context, trust


@pytest.mark.asyncio
async def test_https_webhooks_verify_the_certificate_for_the_name_not_the_pinned_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Sent to the address the name was checked to resolve to, verified as the name: a
    certificate for the name from a trusted authority passes; one for another name, or from an
    authority not trusted, is refused (transient: a certificate can be fixed) and nothing is
    accepted."""
    resolve_to(monkeypatch, "hooks.example.com", "127.0.0.1")
    right, trust = tls_serving(tmp_path / "right", "hooks.example.com")
    wrong, _ = tls_serving(tmp_path / "wrong", "other.example.com")
    outcomes = []
    for context, trusted in ((right, trust), (wrong, trust), (right, None)):
        if trusted is None:
            monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        else:
            monkeypatch.setenv("SSL_CERT_FILE", str(trusted))
        async with Canned(answer("200 OK"), tls=context) as server:
            channels = local_channels()
            try:
                url = f"https://hooks.example.com:{server.port}/agents/li.na"
                outcomes.append((await channels.send(webhook(url)), server.requests))
            finally:
                await channels.close()
    [(good, _), (other_name, heard_other), (unknown_authority, heard_unknown)] = outcomes
    assert good == Sent()
    assert isinstance(other_name, Transient) and "certificate" in other_name.error.lower()
    assert isinstance(unknown_authority, Transient), unknown_authority
    assert "certificate" in unknown_authority.error.lower()
    assert heard_other == heard_unknown == 0


@pytest.mark.asyncio
async def test_a_long_text_message_goes_to_the_provider_cut_to_its_segments() -> None:
    long = "您好，您的服务请求已受理：" + "打印机卡纸，无法打印任何文件。" * 20
    with http_receiver() as provider:
        channels = local_channels(
            notify_sms_endpoint=provider.url("/sms"), notify_sms_max_segments=2
        )
        try:
            notice = replace(webhook(""), channel="sms", address="+8613800001234", body=long)
            outcome = await channels.send(notice)
        finally:
            await channels.close()
    [sent] = provider.at("/sms")
    text = sent.json()["text"]
    assert outcome == Sent()
    assert (segments(text), text.endswith("…")) == (2, True)
    assert long.startswith(text[:-1])


@pytest.mark.asyncio
async def test_what_a_receiver_says_is_kept_apart_from_the_error_and_made_storable() -> None:
    """A webhook's answer with a NUL, controls and the customer's number in it, and a relay's
    reply with a byte that is not UTF-8: the error says only the status or code (it goes to
    logs, dead letters and ``deliveries``); the answer, apart, holds neither NUL nor a lone
    surrogate (PostgreSQL refused the whole group commit over one) and masks contact data."""
    said = b"refused\x00 for +8613800001234\n\x1b[2J c1@example.com"
    async with Canned(answer("400 Bad Request", said)) as server:
        channels = local_channels()
        try:
            posted = await channels.send(webhook(server.url()))
        finally:
            await channels.close()
    assert isinstance(posted, Permanent), posted
    assert posted.error == "HTTP 400"
    assert posted.answer == "refused\ufffd for +86***34 \ufffd[2J c***@example.com"
    async with SlowRelay(0, data_answer=b"554 5.7.1 refus\xe9 \x00 c1@example.com") as relay:
        channels = channels_to(relay)
        try:
            mailed = await channels.send(email("c1@example.com"))
        finally:
            await channels.close()
    assert isinstance(mailed, Permanent), mailed
    assert mailed.error == "SMTP 554"
    assert "\x00" not in mailed.answer and "c1@" not in mailed.answer
    mailed.answer.encode()  # no lone surrogate left: it encodes, as the database needs


@pytest.mark.asyncio
@pytest.mark.parametrize("address", ["ceo;x@a.bc", "a,b@example.com", "x<y@example.com"])
async def test_an_address_the_mail_library_would_read_otherwise_is_not_mailed(
    address: str,
) -> None:
    """``RCPT TO`` for ``ceo;x@a.bc`` would be ``<ceo>``, a mailbox of the desk's own relay:
    such an address (recorded before intake refused it) fails for good, nothing sent."""
    async with SlowRelay(0) as relay:
        channels = channels_to(relay)
        try:
            outcome = await channels.send(email(address))
        finally:
            await channels.close()
    assert isinstance(outcome, Permanent), outcome
    assert relay.recipients == [] and relay.accepted == 0

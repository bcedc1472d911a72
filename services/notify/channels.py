"""Sending one notice over email (SMTP), a webhook or an SMS provider, and judging the outcome.

Every send carries the notice's key, so a receiver can recognise a repeat: email as its
``Message-ID`` (and ``X-Desk-Notice``), webhooks and SMS as an ``Idempotency-Key`` header. HTTP
bodies are signed: ``X-Desk-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` with
``X-Desk-Timestamp``, so a receiver can check origin and reject replays of old requests.

Outcomes: :class:`Sent`, :class:`Transient` (try again later: connection trouble, timeouts, SMTP
4xx, HTTP 429/5xx) and :class:`Permanent` (never: SMTP 5xx, other HTTP 4xx, a bad address, an
endpoint in a network servicedesk may not send to: :mod:`shared.endpoints`).
:meth:`Channels.send` never raises: whatever goes wrong with one notice is that notice's outcome,
so the other notices of its round are sent and settled all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field, replace
from email.utils import formataddr

import aiohttp
import aiosmtplib
import httpx
from aiosmtplib.email import quote_address

from services.notify.mail import compose
from services.notify.settings import NotifySettings
from services.notify.sms import shortened
from services.notify.storage import Delivery
from shared.endpoints import EndpointRefused, EndpointRule, pin
from shared.privacy import mask_email, mask_phone, outside_error


@dataclass(frozen=True)
class Sent:
    pass


@dataclass(frozen=True)
class Transient:
    error: str
    """What went wrong: for logs, dead letters and ``deliveries.last_error``."""
    answer: str = field(default="", kw_only=True)
    """What the receiver said (a webhook's body, a relay's reply): it may quote the notice it
    refused — the customer's name, what they wrote, their number — so it goes only into the
    notice's ``notification.failed``, sealed for the customer."""

    def __post_init__(self) -> None:
        _tidied(self)


@dataclass(frozen=True)
class Permanent:
    error: str
    reason: str = "refused"
    """Why it failed for good, as its event and dead letter say."""
    answer: str = field(default="", kw_only=True)
    """As :attr:`Transient.answer`."""

    def __post_init__(self) -> None:
        _tidied(self)


def _tidied(outcome: Transient | Permanent) -> None:
    """Texts from outside as a column and an event can hold them (:func:`outside_error`): one
    answer with a NUL in it made a whole group commit of notices fail, and go again."""
    object.__setattr__(outcome, "error", outside_error(outcome.error))
    object.__setattr__(outcome, "answer", outside_error(outcome.answer, 200))


Outcome = Sent | Transient | Permanent

RESPONSE_BODY_LIMIT = 64 * 1024
"""The most of a webhook's answer read: only its first 200 characters are kept (in an error).
A body read to its end keeps the connection for the next request; a longer one closes it."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


NOOP_WAIT = 2.0
"""Longest the check of a reused SMTP connection waits (seconds; a quarter of the send's time
if that is less): a connection dropped without a word is replaced, not waited on."""


class Channels:
    """The three channels, configured from settings: ``smtp_connections`` SMTP connections kept
    open and reused (a connection per message costs more than the message), one HTTP client
    (keep-alive) for webhooks and SMS.

    The HTTP client is aiohttp's: httpx's (httpcore's pool and two socket writes a request) cost
    ~1.8 ms of CPU a request here against ~0.2 ms, and was most of notify's CPU in
    ``bench.notify``. It is configured as httpx was: the same TLS trust store and verification
    (``httpx.create_ssl_context``), at most ``notify_send_timeout`` a request, no redirects
    followed, a connection for each of the ``notify_concurrency`` sends in flight, kept alive up
    to 5 s, no proxy or credentials from the environment."""

    def __init__(self, settings: NotifySettings, sender_name: str, sender_email: str) -> None:
        self.settings = settings
        self.sender = formataddr((sender_name, sender_email))
        self.sender_address = sender_email
        self.endpoints = EndpointRule.of(settings)
        self.http = aiohttp.ClientSession(
            # A connection for every send in flight: the timeout counts from the pool, so
            # sends queued behind a slow receiver's timed out unsent, or were sent twice.
            connector=aiohttp.TCPConnector(
                limit=settings.notify_concurrency,
                keepalive_timeout=5.0,
                ssl=httpx.create_ssl_context(),
            ),
            timeout=aiohttp.ClientTimeout(total=settings.notify_send_timeout.total_seconds()),
            trust_env=False,
        )
        self._smtp: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        for _ in range(settings.smtp_connections):
            self._smtp.put_nowait(
                aiosmtplib.SMTP(
                    hostname=settings.smtp_host,
                    port=settings.smtp_port,
                    use_tls=settings.smtp_security == "tls",
                    start_tls=settings.smtp_security == "starttls",
                    # No deadline of its own: an exchange's bound is the whole send's (``send``).
                    # aiosmtplib bounds an exchange with ``asyncio.wait_for``, which on Python
                    # 3.11 returns the answer, swallowing the cancellation, when the send's
                    # deadline falls as the answer arrives: the send then ran on past its
                    # deadline, and past its lease.
                    timeout=None,
                )
            )

    async def close(self) -> None:
        """Close the HTTP client and say QUIT on every SMTP connection at once, each bounded by
        the send timeout: one after another, a silent relay held a stop for a timeout a
        connection."""
        await self.http.close()
        clients = []
        while not self._smtp.empty():
            clients.append(self._smtp.get_nowait())
        await asyncio.gather(*(self._quit(client) for client in clients))

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                async with asyncio.timeout(self.settings.notify_send_timeout.total_seconds()):
                    await client.quit()
        client.close()

    async def send(self, notice: Delivery) -> Outcome:  # noqa: PLR0911 - one return per verdict
        """The outcome of one send, within ``notify_send_timeout`` all told; never raises (only
        cancellation goes through). All told: an SMTP send is several exchanges (connect, log
        in, envelope, data) and a webhook's address is resolved before its request, each bounded
        on its own, while the lease allows one send one timeout before it may go again."""
        try:
            async with asyncio.timeout(self.settings.notify_send_timeout.total_seconds()):
                return await self._send(notice)
        except (EndpointRefused, aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as error:
            return Permanent(f"cannot send to this address: {type(error).__name__}: {error}")
        except (TimeoutError, aiohttp.ClientError, aiosmtplib.SMTPConnectError) as error:
            return Transient(f"{type(error).__name__}: {error}")
        except OSError as error:  # the endpoint's name did not resolve (now)
            return Transient(f"{type(error).__name__}: {error}")
        except aiosmtplib.SMTPServerDisconnected as error:
            return Transient(f"SMTP server disconnected: {error}")
        except aiosmtplib.SMTPResponseException as error:
            verdict = Transient if 400 <= error.code < 500 else Permanent
            return verdict(f"SMTP {error.code}", answer=error.message)
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refusal.code for refusal in error.recipients]
            verdict = Transient if all(400 <= c < 500 for c in codes) else Permanent
            return verdict(f"SMTP recipients refused: {codes}")
        except aiosmtplib.SMTPException as error:
            return Transient(f"SMTP: {error}")
        except Exception as error:  # anything else: this notice's trouble, retried, bounded
            return Transient(f"{type(error).__name__}: {error}")

    async def _send(self, notice: Delivery) -> Outcome:
        if notice.channel == "email":
            return await self._email(notice)
        if notice.channel == "webhook":
            return await self._post(notice.address, notice, {"to": None})
        if notice.channel == "sms":
            endpoint = self.settings.notify_sms_endpoint
            if not endpoint:
                return Permanent("no SMS provider endpoint is configured")
            text = shortened(notice.body, self.settings.notify_sms_max_segments)
            return await self._post(endpoint, replace(notice, body=text), {"to": notice.address})
        return Permanent(f"unknown channel {notice.channel}")

    async def _email(self, notice: Delivery) -> Outcome:
        if not _mailbox(notice.address):
            return Permanent("cannot send to this address: the mail library reads it otherwise")
        raw = compose(self.sender, notice, subject_with_number(notice))
        client = await self._smtp.get()
        try:
            if client.is_connected:
                # An idle connection the relay closed (or a NAT dropped without a word) is found
                # before this message starts, in a part of the send's time.
                wait = self.settings.notify_send_timeout.total_seconds() / 4
                try:
                    async with asyncio.timeout(min(NOOP_WAIT, wait)):
                        await client.noop()
                except (
                    TimeoutError,
                    aiosmtplib.SMTPServerDisconnected,
                    aiosmtplib.SMTPResponseException,
                ):
                    client.close()
            if not client.is_connected:
                await self._connect(client)
            # Never sent again here: a connection lost while the relay answers DATA may have
            # left the message queued there. It is the lease's retry (README: at least once).
            await client.sendmail(self.sender_address, [notice.address], raw)
        except BaseException:
            client.close()
            raise
        finally:
            self._smtp.put_nowait(client)
        return Sent()

    async def _connect(self, client: aiosmtplib.SMTP) -> None:
        s = self.settings
        await client.connect()
        if s.smtp_username and s.smtp_password:
            await client.login(s.smtp_username, s.smtp_password.get_secret_value())

    async def _post(self, url: str, notice: Delivery, extra: dict[str, str | None]) -> Outcome:
        body = json.dumps(
            {
                "notice": notice.notice_key,
                "ticket_id": notice.ticket_id,
                "number": notice.number,
                "template": notice.template,
                "language": notice.language,
                "subject": notice.subject,
                "text": notice.body,
                **{k: v for k, v in extra.items() if v is not None},
            },
            ensure_ascii=False,
        ).encode()
        timestamp = str(int(time.time()))
        secret = self.settings.notify_signing_secret.get_secret_value()
        target = await pin(url, self.endpoints)
        async with self.http.post(
            target.url,
            data=body,
            headers={
                "content-type": "application/json",
                "idempotency-key": notice.notice_key,
                "x-desk-timestamp": timestamp,
                "x-desk-signature": sign(secret, timestamp, body),
                **target.headers,
            },
            allow_redirects=False,
            server_hostname=target.extensions.get("sni_hostname"),
        ) as response:
            status, answer = response.status, await _bounded_body(response)
        if 200 <= status < 300:
            return Sent()
        said = _text(answer, response.charset)
        if status in (408, 425, 429) or status >= 500:
            return Transient(f"HTTP {status}", answer=said)
        return Permanent(f"HTTP {status}", answer=said)


async def _bounded_body(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    while len(body) < RESPONSE_BODY_LIMIT:
        chunk = await response.content.read(RESPONSE_BODY_LIMIT - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _mailbox(address: str) -> bool:
    """Whether ``RCPT TO`` names ``address`` itself: the SMTP client reparses it, and reads
    ``ceo;x@a.bc`` as the local mailbox ``<ceo>`` (intake refuses such addresses; an address
    recorded before it did, or an agent's in the policy, is checked here)."""
    try:
        return quote_address(address) == f"<{address}>"
    except ValueError:
        return False


def _text(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", "replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", "replace")


def subject_with_number(notice: Delivery) -> str:
    """``[REQ-2026-000123] …``: the number where mail clients keep it, so a reply's subject
    names the ticket even when its client drops the threading headers."""
    tag = f"[{notice.number}]"
    if tag in notice.subject:
        return notice.subject
    if notice.number in notice.subject:  # the template names it: bracket it where it stands
        return notice.subject.replace(notice.number, tag, 1)
    return f"{tag} {notice.subject}"


def mask(channel: str | None, address: str | None) -> str | None:
    """What events may say about an address: enough to recognise it, not to use it."""
    if not address:
        return None
    if channel == "email" and "@" in address:
        return mask_email(address)
    if channel == "sms":
        return mask_phone(address)
    if channel == "webhook":
        try:
            parsed = httpx.URL(address)
        except httpx.InvalidURL:
            return "***"
        return f"{parsed.scheme}://{parsed.host}/***"
    return "***"

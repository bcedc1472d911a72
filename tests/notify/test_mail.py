"""A notice's email written out directly reads as the email package would have written it."""

from __future__ import annotations

import email
from dataclasses import replace
from email.errors import HeaderParseError
from email.header import Header
from email.message import EmailMessage
from email.mime.text import MIMEText
from email.policy import default

import pytest

from services.notify.events import mail_message_id
from services.notify.mail import compose
from services.notify.storage import Delivery

pytestmark = pytest.mark.unit

SENDER = "=?utf-8?b?5pyN5Yqh5Y+w?= <desk@example.com>"
NOTICE = Delivery(7, "e-1:customer:acknowledgement", "t", "REQ-2026-000001", "e-1", "customer",
                  "email", "ann@example.com", "acknowledgement", "zh", "", "您好 Ann，\n\n已受理。",
                  "v", 1)  # fmt: skip
THREAD = " ".join(f"<opening-{n}-{'x' * 20}@mail.example.com>" for n in range(20))


def by_the_email_package(notice: Delivery, subject: str) -> bytes:
    """What notify wrote before (compat32 MIMEText)."""
    message = MIMEText(notice.body, "plain", "utf-8")
    message["From"] = SENDER
    message["To"] = notice.address
    message["Subject"] = Header(subject, "utf-8")  # type: ignore[assignment]
    message["Date"] = "Fri, 20 Nov 2026 08:00:00 -0000"
    message["Message-ID"] = mail_message_id(notice.notice_key, notice.number)
    if notice.thread:
        message["In-Reply-To"] = notice.thread.split()[-1]
        message["References"] = notice.thread
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message["X-Desk-Notice"] = notice.notice_key
    message["X-Desk-Ticket"] = notice.number
    message["Content-Language"] = notice.language
    return message.as_bytes()


def read(raw: bytes) -> tuple[list[tuple[str, str]], str]:
    message = email.message_from_bytes(raw, _class=EmailMessage, policy=default)
    assert isinstance(message, EmailMessage) and not message.defects
    headers = [(k, str(v)) for k, v in message.items() if k != "Date"]
    return headers, message.get_content()


@pytest.mark.parametrize(
    ("notice", "subject"),
    [
        (NOTICE, "[REQ-2026-000001] Your request has been received"),
        (NOTICE, "您的服务请求 [REQ-2026-000001] 已受理 " + "打印机卡纸，无法打印任何文件" * 6),
        (replace(NOTICE, thread=THREAD), "Re: [REQ-2026-000001] 😀 emoji and ascii " * 3),
        (replace(NOTICE, body=""), "[REQ-2026-000001]"),
        (replace(NOTICE, address="安@例子.中国"), "[REQ-2026-000001] 地址"),  # the package's way
    ],
)
def test_the_written_message_reads_as_the_email_packages(notice: Delivery, subject: str) -> None:
    raw = compose(SENDER, notice, subject)
    assert read(raw) == read(by_the_email_package(notice, subject))
    if notice.address.isascii():  # written directly: folded as RFC 5322 recommends
        assert max(len(line) for line in raw.split(b"\n")) <= 78


def test_a_header_value_with_a_line_break_is_refused_as_before() -> None:
    """A Message-ID from a customer's mail carrying a line break cannot add a header of its
    own: written the email package's way, refused as it refused it (the send fails)."""
    notice = replace(NOTICE, thread="<a@b>\r\nBcc: someone@example.com")
    with pytest.raises(HeaderParseError, match="embedded header"):
        by_the_email_package(notice, "s")
    with pytest.raises(HeaderParseError, match="embedded header"):
        compose(SENDER, notice, "s")


def test_every_notice_says_it_was_made_by_a_program() -> None:
    """RFC 3834: an out-of-office responder answers no notice (one that did would mail the
    customer's absence back to the desk, once per notice)."""
    message = email.message_from_bytes(compose(SENDER, NOTICE, "s"), policy=default)
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Auto-Response-Suppress"] == "All"

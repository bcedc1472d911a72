"""The local mail sink of `desk up`: what it wrote before a restart stays where it was."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path

from shared.local.sinks import smtp_server


def send(port: int, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "desk@desk.example.com"
    message["To"] = "customer@example.com"
    message["Subject"] = subject
    message.set_content(subject)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.send_message(message)


def subjects(mailbox: Path) -> list[str]:
    return sorted(
        line.removeprefix("Subject: ")
        for path in mailbox.glob("*.eml")
        for line in path.read_text().splitlines()
        if line.startswith("Subject: ")
    )


def test_a_restarted_sink_keeps_the_mail_of_the_previous_run(tmp_path: Path) -> None:
    mailbox = tmp_path / "mail"
    with smtp_server(mailbox=mailbox, keep=False) as first:
        send(first.port, "before the restart 1")
        send(first.port, "before the restart 2")
    with smtp_server(mailbox=mailbox, keep=False) as second:
        send(second.port, "after the restart")
    assert subjects(mailbox) == [
        "after the restart",
        "before the restart 1",
        "before the restart 2",
    ]
    assert sorted(p.name for p in mailbox.glob("*.eml"))[-1] == "0000003.eml", "numbers go on"


def test_two_sinks_on_one_mailbox_never_overwrite_each_other(tmp_path: Path) -> None:
    mailbox = tmp_path / "mail"
    with (
        smtp_server(mailbox=mailbox, keep=False) as one,
        smtp_server(mailbox=mailbox, keep=False) as other,
    ):
        for n in range(3):
            send(one.port, f"one {n}")
            send(other.port, f"other {n}")
    assert len(subjects(mailbox)) == 6

"""Commands as agent desks send them: control characters in what people write are replaced,
and an id holding one is no id."""

from __future__ import annotations

import json

import pytest

from services.dispatch.commands import AddNote, Unreadable, read_ticket_command
from services.dispatch.events import TicketCommandRejected

pytestmark = pytest.mark.unit


def command(**fields: object) -> bytes:
    return json.dumps(
        {"type": "add_note", "command_id": "c-1", "ticket_number": "REQ-2026-0001", **fields}
    ).encode()


def test_control_characters_in_what_an_agent_writes_are_replaced_and_line_breaks_kept() -> None:
    read = read_ticket_command(command(note="called\x1b]0;pwned\x07 back\nno answer"))
    assert isinstance(read, AddNote)
    assert read.note == "called\ufffd]0;pwned\ufffd back\nno answer"


def test_an_id_with_a_control_character_is_refused_and_the_rejection_shows_none() -> None:
    read = read_ticket_command(command(command_id="c-\x1b[31m1", note="fine"))
    assert isinstance(read, Unreadable)
    assert read.reason == "invalid_command"
    assert read.detail.startswith("add_note.command_id")
    assert read.command_id == "c-\ufffd[31m1"


def test_a_bidi_override_in_a_note_is_replaced_and_one_in_an_id_refused() -> None:
    read = read_ticket_command(command(note="refund \u202eredro"))
    assert isinstance(read, AddNote)
    assert read.note == "refund \ufffdredro"
    refused = read_ticket_command(command(command_id="c-\u202e1", note="fine"))
    assert isinstance(refused, Unreadable)
    assert refused.reason == "invalid_command"
    marked = read_ticket_command(command(command_id="c-\u200e1", note="fine"))  # an LRM
    assert isinstance(marked, Unreadable)
    assert marked.reason == "invalid_command"


def test_a_rejection_quoting_a_nul_or_an_escape_from_the_record_holds_neither() -> None:
    """The parser echoes an unknown ``type`` into the refusal's detail; a NUL there made the
    console's decisions projection fail (PostgreSQL's ``text`` refuses it) and stall its
    partition. The rejection cleans it when made, and when one recorded before is read."""
    value = json.dumps({"type": "\x00\x1b[31m\u202e", "command_id": "x", "ticket_number": "T"})
    read = read_ticket_command(value.encode())
    assert isinstance(read, Unreadable)
    made = TicketCommandRejected(
        command_id=read.command_id,
        command=read.command,
        target=read.target,
        actor=read.actor,
        reason=read.reason,
        detail=read.detail,
    )
    assert "type" in made.detail and "does not match" in made.detail
    assert not {"\x00", "\x1b", "\u202e"} & set(made.detail)
    recorded = made.model_dump(mode="json") | {"detail": "tag '\x00' from c@example.com"}
    again = TicketCommandRejected.model_validate_json(json.dumps(recorded))
    assert again.detail == "tag '\ufffd' from c***@example.com"

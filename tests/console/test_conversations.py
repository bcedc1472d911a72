"""What the console keeps of ``customer.messages`` for its channel clients
(services/console/conversations.py)."""

from __future__ import annotations

import secrets

from services.console.conversations import readable
from services.notify.events import CustomerMessage
from shared.personal import DataKeys

KEPT, ERASED = "cust-kept", "cust-erased"


def _message(keys: DataKeys, ref: str | None) -> CustomerMessage:
    def text(value: str) -> str:
        return keys.seal_text(ref, value) if ref else value

    return CustomerMessage(
        notice_key=f"n-{ref}", ticket_id="t", number="REQ-2026-000001", channel="web",
        conversation="c", customer_name=text("Ann Lee"), language="en",
        template="agent_reply", subject=text("Printer"), text=text("Fixed."),
        cause_event_id="e",
    )  # fmt: skip


def test_a_message_sealed_under_a_destroyed_key_is_not_kept_and_any_other_is() -> None:
    """An agent's reply to an erased customer's ticket can reach the console after the erasure
    deleted their messages: sealed under the destroyed key, it is dropped, not kept to read
    "erased"."""
    keys = {KEPT: secrets.token_bytes(32), ERASED: secrets.token_bytes(32)}
    sealing = DataKeys(keys)
    kept, erased, old = (_message(sealing, ref) for ref in (KEPT, ERASED, None))
    now = DataKeys({KEPT: keys[KEPT], ERASED: None})  # the key store after the erasure

    assert [readable(m, now) for m in (kept, erased, old)] == [True, False, True]

"""A webhook whose name resolves into a network notify may not reach is refused at send time:
a permanent failure, and nothing is sent (the receiver listens on loopback and sees nothing)."""

from __future__ import annotations

import pytest

from services.notify.channels import Channels, Permanent, Sent
from services.notify.settings import NotifySettings
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

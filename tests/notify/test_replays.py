"""notify.deliveries carries dead-lettered notices an operator sends back, sealed by notify as
it dead-lettered them: anything else on it is answered with a dead letter and its reason, never
swallowed."""

from __future__ import annotations

import json

import pytest

from services.notify.app import build as notify
from shared.settings import Settings
from tests.support.kafka import KafkaProbe
from tests.support.services import running

DELIVERIES = "notify.deliveries"


@pytest.mark.asyncio
async def test_a_record_that_is_no_replayed_notice_becomes_a_dead_letter(
    settings: Settings, kafka: KafkaProbe
) -> None:
    async with running(notify(settings)):
        await kafka.publish(DELIVERIES, b"\xff\xfe not even text", key=b"some-notice")
        await kafka.publish(DELIVERIES, json.dumps({"hello": "world"}), key=b"other-notice")
        await kafka.publish(
            DELIVERIES, json.dumps({"notice_key": "a-third-one"}), key=b"not-the-same-one"
        )
        await kafka.publish(DELIVERIES, json.dumps({"notice_key": "keyless"}))
        # Well formed, but not one notify dead-lettered (no seal of notify's): anyone's.
        await kafka.publish(DELIVERIES, json.dumps({"notice_key": "forged"}), key=b"forged")
        dead = await kafka.await_records(f"{DELIVERIES}.dlq", lambda r: True, count=5)
    assert sorted((r.key or b"", r.header("dlq_reason")) for r in dead) == [
        (b"", "schema_invalid"),
        (b"forged", "unauthenticated"),
        (b"not-the-same-one", "schema_invalid"),
        (b"other-notice", "schema_invalid"),
        (b"some-notice", "undecodable"),
    ]

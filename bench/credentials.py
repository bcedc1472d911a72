"""What proving identity costs, in µs: per command (dispatch's verification, a desk's signing)
and per event (the relay's seal, each consumer's check), with Ed25519 signatures beside the HMAC
seal for the decision in docs/security.md.

    python -m bench.credentials [--rounds 5] [--count 5000]

Pure CPU in this process, no infrastructure: each figure is the median over ``--rounds`` of the
mean over ``--count`` operations.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench._support import report
from services.dispatch.events import TicketAssigned
from shared.credentials import (
    CommandVerifier,
    authenticate_command,
    issue_token,
    read_token,
    sign_command,
)
from shared.deadletter import Record
from shared.events import Envelope, new_event_id
from shared.keys import KeyRing
from shared.provenance import Provenance, seal

NOW = datetime.now(UTC)


def micros(operation: Callable[[], Any], count: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(count):
            operation()
        samples.append((time.perf_counter() - started) / count * 1e6)
    return round(statistics.median(samples), 2)


def an_event() -> tuple[Envelope, bytes]:
    """A typical event on dispatch.events (≈ 700 bytes), as the relay publishes it."""
    data = TicketAssigned(
        ticket_id=str(new_event_id()),
        number="REQ-2026-000123",
        group_id="pc-hardware",
        agent_id="liu.yang",
        strategy="skills,round_robin",
        reason="skills pc, laptop, hardware; language zh; round robin after mark.chen",
        cause="classified",
        policy_version="sha256:0123456789abcdef",
    )
    envelope = Envelope(
        id=new_event_id(),
        source="servicedesk/dispatch",
        type=data.event_type(),
        subject=data.ticket_id,
        time=NOW,
        streamid=f"ticket-{data.ticket_id}",
        streamversion=3,
        correlationid=data.ticket_id,
        causationid=str(new_event_id()),
        data=data.model_dump(mode="json"),
    )
    return envelope, envelope.model_dump_json().encode()


def main(count: int, rounds: int) -> None:
    ring = KeyRing.generate({"desk": ["agents"], "dispatch": ["system"]})
    desk, dispatch = ring.signing_key("desk"), ring.signing_key("dispatch")
    assert desk is not None and dispatch is not None
    token = issue_token(desk, "liu.yang", now=NOW, ttl=timedelta(hours=8))
    command = (
        b'{"command_id": "0192f6a0-7e3c-7000-8000-00000000abcd", "type": "respond", '
        b'"ticket_number": "REQ-2026-000123", "message": "' + "我们正在处理。".encode() * 20 + b'"}'
    )
    headers = sign_command(token, command)
    credential = authenticate_command(ring, headers, command)

    def verify_command() -> None:
        authenticate_command(ring, headers, command).check_time(NOW, timedelta(days=7))

    verifier = CommandVerifier(ring)

    def verify_again() -> None:  # what dispatch pays for a desk's next command, same token
        verifier.authenticate(headers, command).check_time(NOW, timedelta(days=7))

    envelope, value = an_event()
    record = Record("dispatch.events", 0, 0, b"k", value, tuple(seal(dispatch, value)))
    provenance = Provenance(ring, {envelope.type: "dispatch"})
    signer = Ed25519PrivateKey.generate()
    public, signature = signer.public_key(), signer.sign(value)
    report(
        {
            "command_verify_us": micros(verify_command, count, rounds),
            "command_verify_known_token_us": micros(verify_again, count, rounds),
            "command_sign_us": micros(lambda: sign_command(token, command), count, rounds),
            "token_issue_us": micros(
                lambda: issue_token(desk, "liu.yang", now=NOW, ttl=timedelta(hours=8)),
                count,
                rounds,
            ),
            "token_read_us": micros(lambda: read_token(ring, token), count, rounds),
            "event_seal_hmac_us": micros(lambda: seal(dispatch, value), count, rounds),
            "event_check_hmac_us": micros(
                lambda: provenance.check(record, envelope), count, rounds
            ),
            "event_sign_ed25519_us": micros(lambda: signer.sign(value), count, rounds),
            "event_verify_ed25519_us": micros(
                lambda: public.verify(signature, value), count, rounds
            ),
            "command_bytes": len(command),
            "event_bytes": len(value),
            "subject": credential.subject,
            "count": count,
            "rounds": rounds,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    main(args.count, args.rounds)

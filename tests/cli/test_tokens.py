"""`desk token issue` and `desk keys generate`: what an operator hands out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services import desk_settings, key_issuers
from services.cli import app as desk
from shared.credentials import verify_bearer
from shared.keys import KeyRing, local_key_file

pytestmark = pytest.mark.unit


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KeyRing:
    path = local_key_file(tmp_path / "keys.json", key_issuers())
    monkeypatch.setenv("DESK_KEYS_FILE", str(path))
    monkeypatch.setenv("DESK_DATA_DIR", str(tmp_path / "no-desk-up"))
    return KeyRing.from_settings(desk_settings())


def issue(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(desk, ["token", "issue", *args])
    return result.exit_code, result.output.strip()


def test_an_agent_token_verifies_and_expires_when_asked(keys: KeyRing) -> None:
    code, token = issue("li.na", "--ttl", "30m")
    assert code == 0, token
    now = datetime.now(UTC)
    credential = verify_bearer(keys, token, now=now, max_ttl=timedelta(days=7))
    assert (credential.subject, credential.issuer, credential.kind) == ("li.na", "desk", "agent")
    assert timedelta(minutes=29) < credential.expires_at - now <= timedelta(minutes=30)


def test_a_customer_token_is_bound_to_its_ticket(keys: KeyRing) -> None:
    code, token = issue("customer", "--ticket", "REQ-2026-000001")
    assert code == 0, token
    credential = verify_bearer(keys, token, now=datetime.now(UTC), max_ttl=timedelta(days=7))
    assert (credential.issuer, credential.ticket) == ("notify", "REQ-2026-000001")
    assert credential.commands == ("record_satisfaction", "reopen")


def test_a_channel_client_token_posts_requests_and_is_no_agent(keys: KeyRing) -> None:
    code, token = issue("channel:webform", "--ttl", "1h")
    assert code == 0, token
    credential = verify_bearer(keys, token, now=datetime.now(UTC), max_ttl=timedelta(days=7))
    assert (credential.subject, credential.issuer) == ("channel:webform", "desk")
    assert credential.kind == "channel"


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["mallory"], "not an agent or operator of the directory"),
        (["channel:"], "a channel client is channel:NAME"),
        (["channel:web form"], "a channel client is channel:NAME"),
        (["channel:webform", "--ticket", "REQ-2026-000001"], "for customer tokens"),
        (["system"], "service's own key"),
        (["customer"], "needs --ticket"),
        (["li.na", "--ttl", "30d"], "longer than DESK_TOKEN_MAX_TTL"),
        (["li.na", "--ticket", "REQ-2026-000001"], "for customer tokens"),
    ],
)
def test_what_an_operator_may_not_issue(keys: KeyRing, args: list[str], why: str) -> None:
    code, output = issue(*args)
    assert code == 1 and why in output, output


def test_keys_generate_prints_a_strong_ring_for_every_issuer() -> None:
    result = CliRunner().invoke(desk, ["keys", "generate"])
    ring = KeyRing.parse(result.output)
    assert ring.problems() == []
    assert {k.issuer for k in ring} == set(key_issuers())


@pytest.mark.parametrize("ttl", ["0", "0s", "0d"])
def test_a_token_valid_for_no_time_is_refused(keys: KeyRing, ttl: str) -> None:
    code, output = issue("li.na", "--ttl", ttl)
    assert code == 1
    assert "--ttl must be longer than zero" in output

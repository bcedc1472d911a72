"""Keys, tokens and signed commands (pure): what is accepted, what is refused, and why."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from shared.credentials import (
    PROOF_HEADER,
    TOKEN_HEADER,
    CommandVerifier,
    Unauthenticated,
    authenticate_command,
    issue_token,
    read_token,
    sign_command,
    verify_bearer,
)
from shared.keys import Key, KeyRing, KeyRingError, local_key_file, weak_secrets
from shared.settings import Settings

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
RING = KeyRing.generate({"desk": ["agents"], "notify": ["system", "customers"], "sla": ["system"]})


def _key(issuer: str) -> Key:
    key = RING.signing_key(issuer)
    assert key is not None
    return key


DESK, NOTIFY, SLA = _key("desk"), _key("notify"), _key("sla")
HOUR = timedelta(hours=1)
WEEK = timedelta(days=7)


def test_a_token_carries_its_claims_and_reads_back() -> None:
    token = issue_token(DESK, "li.na", now=NOW, ttl=8 * HOUR)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (header["alg"], header["kid"]) == ("HS256", DESK.kid)
    assert set(claims) == {"iss", "sub", "aud", "iat", "exp", "jti"}
    assert (claims["iss"], claims["sub"], claims["aud"]) == ("desk", "li.na", "servicedesk")
    credential = read_token(RING, token)
    assert (credential.subject, credential.kind, credential.issuer) == ("li.na", "agent", "desk")
    assert credential.expires_at == NOW + 8 * HOUR
    credential.check_time(NOW + HOUR, WEEK)


def test_a_customer_token_is_bound_to_one_ticket_and_its_commands() -> None:
    token = issue_token(
        NOTIFY, "customer", now=NOW, ttl=WEEK, ticket="REQ-2026-000001", commands=["reopen"]
    )
    credential = read_token(RING, token)
    assert (credential.kind, credential.ticket, credential.commands) == (
        "customer",
        "REQ-2026-000001",
        ("reopen",),
    )


@pytest.mark.parametrize(
    ("key", "subject", "ticket"),
    [
        (DESK, "system", None),  # system only with a service's key
        (DESK, "customer", "REQ-2026-000001"),  # the operators' key vouches for agents
        (SLA, "li.na", None),  # a service's key does not vouch for people
        (NOTIFY, "customer", None),  # a customer token names its ticket
    ],
)
def test_an_issuer_vouches_only_for_what_its_key_says(
    key: Key, subject: str, ticket: str | None
) -> None:
    with pytest.raises(Unauthenticated, match="may not vouch"):
        issue_token(key, subject, now=NOW, ttl=HOUR, ticket=ticket)
    claims: dict[str, object] = {"iss": key.issuer, "sub": subject, "aud": "servicedesk"}
    claims["jti"] = "j"
    claims |= {"iat": int(NOW.timestamp()), "exp": int((NOW + HOUR).timestamp())}
    if ticket:
        claims |= {"ticket": ticket, "commands": []}
    forged = jwt.encode(claims, key.secret, algorithm="HS256", headers={"kid": key.kid})
    with pytest.raises(Unauthenticated, match="may not vouch"):
        read_token(RING, forged)


def _tamper(token: str, **claims: object) -> str:
    header, payload, signature = token.split(".")
    document = json.loads(base64.urlsafe_b64decode(payload + "=="))
    changed = base64.urlsafe_b64encode(json.dumps(document | claims).encode()).rstrip(b"=")
    return f"{header}.{changed.decode()}.{signature}"


def test_forged_unknown_and_malformed_tokens_are_refused() -> None:
    token = issue_token(DESK, "li.na", now=NOW, ttl=HOUR)
    [other] = KeyRing.generate({"desk": ["agents"]})
    cases = {
        "a changed claim": _tamper(token, sub="sun.yu"),
        "an unknown key": issue_token(other, "li.na", now=NOW, ttl=HOUR),
        "not a token": "hello",
        "another audience": jwt.encode(
            {"iss": "desk", "sub": "x", "aud": "else", "iat": 1, "exp": 2, "jti": "j"},
            DESK.secret,
            headers={"kid": DESK.kid},
        ),
        "no expiry": jwt.encode(
            {"iss": "desk", "sub": "x", "aud": "servicedesk", "iat": 1, "jti": "j"},
            DESK.secret,
            headers={"kid": DESK.kid},
        ),
        "alg none": jwt.encode(
            {"iss": "desk", "sub": "x", "aud": "servicedesk", "iat": 1, "exp": 2, "jti": "j"},
            "",
            algorithm="none",
            headers={"kid": DESK.kid},
        ),
    }
    accepted = [name for name, candidate in cases.items() if not _refused(read_token, candidate)]
    assert accepted == []


def test_time_is_checked_against_the_callers_clock() -> None:
    token = issue_token(DESK, "li.na", now=NOW, ttl=HOUR)
    with pytest.raises(Unauthenticated, match="expired"):
        verify_bearer(RING, token, now=NOW + HOUR, max_ttl=WEEK)
    with pytest.raises(Unauthenticated, match="in the future"):
        verify_bearer(RING, token, now=NOW - 2 * HOUR, max_ttl=WEEK)
    long_lived = issue_token(DESK, "li.na", now=NOW, ttl=30 * WEEK)
    with pytest.raises(Unauthenticated, match="longer than"):
        verify_bearer(RING, long_lived, now=NOW, max_ttl=WEEK)
    assert verify_bearer(RING, token, now=NOW + timedelta(minutes=59), max_ttl=WEEK).subject


def test_a_command_proves_its_token_without_carrying_it() -> None:
    token = issue_token(DESK, "li.na", now=NOW, ttl=HOUR)
    value = b'{"command_id": "c-1", "type": "accept", "ticket_number": "REQ-2026-000001"}'
    headers = sign_command(token, value)
    found = dict(headers)
    assert found[TOKEN_HEADER] == token.rsplit(".", 1)[0].encode()
    assert token.rsplit(".", 1)[1].encode() not in b"".join(found.values())
    assert authenticate_command(RING, headers, value).subject == "li.na"

    refused = {
        "another value": (headers, value.replace(b"c-1", b"c-2")),
        "no headers": ([], value),
        "no proof": ([(TOKEN_HEADER, found[TOKEN_HEADER])], value),
        "a changed payload": (
            [
                (TOKEN_HEADER, _tamper(token, sub="sun.yu").rsplit(".", 1)[0].encode()),
                (PROOF_HEADER, found[PROOF_HEADER]),
            ],
            value,
        ),
        "garbage": ([(TOKEN_HEADER, b"\xff"), (PROOF_HEADER, b"x")], value),
        "a proof twice (one reader takes the first, another the last)": (
            [(PROOF_HEADER, b"AAAA"), *headers],
            value,
        ),
        "a token twice": ([*headers, (TOKEN_HEADER, found[TOKEN_HEADER])], value),
        "a header nested 50,000 deep": (
            [
                (TOKEN_HEADER, base64.urlsafe_b64encode(b"[" * 50_000).rstrip(b"=") + b".e30"),
                (PROOF_HEADER, b"AAAA"),
            ],
            value,
        ),
    }
    accepted = [n for n, (hs, v) in refused.items() if not _refused(authenticate_command, hs, v)]
    assert accepted == []


def _refused(check: Callable[..., object], *args: object) -> bool:
    try:
        check(RING, *args)
    except Unauthenticated:
        return True
    return False


def test_a_ring_reads_rotates_and_names_its_weak_keys(tmp_path: Path) -> None:
    old, new = KeyRing.generate({"desk": ["agents"]}), KeyRing.generate({"desk": ["agents"]})
    document = json.loads(old.dump())["keys"] + json.loads(new.dump())["keys"]
    ring = KeyRing.parse(json.dumps({"keys": document}))
    [newest] = new
    assert ring.signing_key("desk") == newest, "the last listed key signs"
    document[1]["signing"] = False
    [oldest] = old
    assert KeyRing.parse(json.dumps({"keys": document})).signing_key("desk") == oldest
    assert len(ring) == 2 and ring.problems() == []
    weak = [
        {"kid": "a", "issuer": "desk", "vouches": ["agents"], "secret": "c2VjcmV0"},
        {"kid": "b", "issuer": "desk", "vouches": ["agents"], "secret": "A" * 43},
    ]
    problems = KeyRing.parse(json.dumps({"keys": weak})).problems(issuer="intake")
    assert any("key a: secret shorter" in p for p in problems)
    assert any("key b: a well-known or repeated-byte" in p for p in problems)
    assert "no signing key of issuer 'intake'" in problems
    assert KeyRing().problems() == ["no keys (set DESK_KEYS_FILE or DESK_KEYS)"]
    for bad in ('{"keys": [{"kid": "x"}]}', "[1]", "nope", '{"keys": [{"kid": "x", "issuer": '
                '"y", "secret": "zz", "vouches": ["root"]}]}'):  # fmt: skip
        with pytest.raises(KeyRingError):
            KeyRing.parse(bad)


def test_local_keys_are_made_once_private_and_extended(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    local_key_file(path, {"desk": ["agents"]})
    first = path.read_text()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    local_key_file(path, {"desk": ["agents"]})
    assert path.read_text() == first, "kept: tokens stay valid across restarts"
    local_key_file(path, {"desk": ["agents"], "sla": ["system"]})
    ring = KeyRing.parse(path.read_text())
    assert ring.signing_key("sla") is not None and first[:60] in path.read_text()


def test_default_and_short_secret_settings_are_named() -> None:
    class WithSecret(Settings):
        hook_secret: str = "local-development-secret"

    assert weak_secrets(WithSecret()) == [
        "DESK_HOOK_SECRET is empty, its default, well known or under 32 bytes"
    ]
    assert weak_secrets(WithSecret(hook_secret="x" * 12 + "y" * 30)) == []


def test_a_verifier_reads_a_token_once_and_still_checks_every_record() -> None:
    verifier = CommandVerifier(RING, remember=2)
    tokens = [issue_token(DESK, agent, now=NOW, ttl=HOUR) for agent in ("a", "b", "c")]
    for token in tokens:
        value = token[-8:].encode()
        assert verifier.authenticate(sign_command(token, value), value).subject
    assert len(verifier._read) == 2, "bounded"
    value = b'{"command_id": "1"}'
    headers = sign_command(tokens[2], value)
    assert verifier.authenticate(headers, value).subject == "c"
    with pytest.raises(Unauthenticated, match="does not match its proof"):
        verifier.authenticate(headers, b'{"command_id": "2"}')

"""Outside local mode a service refuses to start with no keys, weak keys or default secrets, and a
policy or setting naming an endpoint in a private network is refused; a service that publishes
needs its own key in any mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from services import desk_settings
from services.intake.app import build as intake
from services.notify.app import build as notify
from services.policy import DEFAULT_POLICY
from shared.keys import KeyRing
from shared.policyfile import PolicyError
from shared.settings import Settings

STRONG_SECRET = "s" * 10 + "t" * 30


WEAK_KEY = {"kid": "k", "issuer": "intake", "vouches": ["system"], "secret": "c2VjcmV0"}


def production(settings: Settings, **changes: object) -> Settings:
    return settings.replace(
        **{"local_mode": False, "notify_signing_secret": STRONG_SECRET, **changes}
    )


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"keys_file": None}, "no keys"),
        ({"keys_file": None, "keys": json.dumps({"keys": [WEAK_KEY]})}, "shorter than 32 bytes"),
        ({"notify_signing_secret": "local-development-secret"}, "DESK_NOTIFY_SIGNING_SECRET"),
    ],
    ids=["no keys", "a weak key", "the default signing secret"],
)
async def test_outside_local_mode_weak_credentials_stop_the_start(
    settings: Settings, changes: dict[str, object], why: str
) -> None:
    service = intake(production(settings, **changes))
    with pytest.raises(RuntimeError, match=why):
        await service.app.start()


@pytest.mark.asyncio
async def test_a_service_that_publishes_needs_its_own_key_even_locally(
    settings: Settings, tmp_path: Path
) -> None:
    others = tmp_path / "keys.json"
    others.write_text(KeyRing.generate({"desk": ["agents"]}).dump())
    service = intake(settings.replace(keys_file=others))
    with pytest.raises(RuntimeError, match="intake has no key to seal its events"):
        await service.app.start()


def test_a_policy_naming_a_private_webhook_is_refused_outside_local_mode(
    settings: Settings, tmp_path: Path
) -> None:
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    policy["directory"]["agents"][0]["webhook_url"] = "http://169.254.169.254/latest"
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, allow_unicode=True))
    with pytest.raises(PolicyError, match=r"agents\[0\]\.webhook_url: .*link-local"):
        notify(production(settings, policy_file=path))
    policy["directory"]["agents"][0]["webhook_url"] = "http://127.0.0.1:9000/hook"
    path.write_text(yaml.safe_dump(policy, allow_unicode=True))
    with pytest.raises(PolicyError, match="loopback"):
        notify(production(settings, policy_file=path))
    assert notify(settings.replace(policy_file=path)).name == "notify", "local mode: loopback"


def test_an_sms_endpoint_in_a_private_network_is_refused_when_settings_are_read() -> None:
    with pytest.raises(ValidationError, match="private"):
        desk_settings(notify_sms_endpoint="http://10.0.0.5/sms")
    with pytest.raises(ValidationError, match="only http and https"):
        desk_settings(notify_sms_endpoint="ftp://sms.example.com/")
    assert desk_settings(notify_sms_endpoint="http://10.0.0.5/sms", allow_private_endpoints=True)

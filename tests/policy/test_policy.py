"""The policy file: validated with line and field, versioned by content, reloaded on change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.policy import DEFAULT_POLICY, Policy
from shared.policyfile import PolicyError, PolicyWatch, load_policy, parse_policy

DESK = str(Path(sys.executable).parent / "desk")

BROKEN = b"""\
triage:
  default_complexity: general
  complaints:
    keywords: {en: [complaint]}
  rules:
    - name: fine
      when: {priorities: [urgent]}
      complexity: complex
    - name: Bad Name
      when: {priorities: [soon]}
      complexity: hard
slas: {}
"""


@pytest.mark.unit
def test_the_shipped_policy_is_valid_and_versioned_by_content() -> None:
    policy, version = load_policy(DEFAULT_POLICY, Policy)
    assert policy.triage.rules
    assert version.startswith("sha256:")
    assert load_policy(DEFAULT_POLICY, Policy)[1] == version


@pytest.mark.unit
def test_errors_name_the_line_and_the_field() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(BROKEN, Policy, source="policy.yaml")
    problems = caught.value.problems
    assert any(p.startswith("policy.yaml:9: triage.rules[1].name:") for p in problems), problems
    assert any(
        p.startswith("policy.yaml:10: triage.rules[1].when.priorities[0]:") for p in problems
    )
    assert any(p.startswith("policy.yaml:11: triage.rules[1].complexity:") for p in problems)
    assert any(p.startswith("policy.yaml:12: slas:") for p in problems)


@pytest.mark.unit
def test_yaml_syntax_errors_name_their_line() -> None:
    with pytest.raises(PolicyError, match=r"policy.yaml:4: expected .,. or .\]."):
        parse_policy(b"triage:\n  rules:\n    - [unclosed\n", Policy, source="policy.yaml")


def test_desk_policy_check_reports_valid_and_invalid_files(tmp_path: Path) -> None:
    good = subprocess.run([DESK, "policy", "check"], capture_output=True, text=True, check=False)
    assert good.returncode == 0, good.stdout
    assert "valid" in good.stdout and "sha256:" in good.stdout
    broken = tmp_path / "policy.yaml"
    broken.write_bytes(BROKEN)
    bad = subprocess.run(
        [DESK, "policy", "check", str(broken)], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1
    assert f"{broken}:10: triage.rules[1].when.priorities[0]" in bad.stdout


@pytest.mark.unit
def test_a_changed_file_is_reloaded_and_an_invalid_edit_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(DEFAULT_POLICY.read_bytes())
    watch = PolicyWatch(path, Policy)
    _, first_version = watch.current()

    path.write_text(path.read_text().replace("prefix: REQ", "prefix: SR"))
    os.utime(path, ns=(1, 1))  # a new modification time even within the same clock tick
    second, second_version = watch.current()
    assert second.numbering.prefix == "SR"
    assert second_version != first_version

    path.write_bytes(BROKEN)
    os.utime(path, ns=(2, 2))
    kept, kept_version = watch.current()
    assert (kept, kept_version) == (second, second_version)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("http://[::1", "not a URL"),
        ("ftp://files.example.com/hook", "http or https"),
        ("mailto:li.na@example.com", "http or https"),
        ("https:///no-host", "no host"),
    ],
)
def test_a_webhook_address_that_cannot_be_sent_to_is_refused_at_load(
    address: str, problem: str
) -> None:
    document = DEFAULT_POLICY.read_text().replace(
        'webhook_url: "http://127.0.0.1:9901/agents/li.na"', f'webhook_url: "{address}"'
    )
    assert address in document
    with pytest.raises(PolicyError) as caught:
        parse_policy(document.encode(), Policy, source="policy.yaml")
    [found] = caught.value.problems
    assert found.startswith("policy.yaml:"), found
    assert "directory.agents[0].webhook_url" in found and problem in found, found


@pytest.mark.unit
def test_the_sms_endpoint_setting_must_be_an_http_address() -> None:
    from pydantic import ValidationError

    from services.notify.settings import NotifySettings

    with pytest.raises(ValidationError, match="not a URL"):
        NotifySettings(notify_sms_endpoint="http://[::1")
    assert NotifySettings(notify_sms_endpoint="https://sms.example.com/send")

"""The policy file: validated with line and field, versioned by content, reloaded on change;
versions in a directory, each in force from its effective date."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.policy import DEFAULT_POLICY, Policy
from shared.policyfile import PolicyError, PolicySchedule, load_policy, parse_policy

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
    # A file without end (or a huge one) is read no further than a policy can be long.
    endless = subprocess.run(
        [DESK, "policy", "check", "/dev/zero"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert endless.returncode == 1
    assert "larger than 4 MiB" in endless.stdout


@pytest.mark.unit
def test_a_changed_file_is_reloaded_and_an_invalid_edit_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(DEFAULT_POLICY.read_bytes())
    schedule = PolicySchedule(path, Policy)
    first = schedule.in_force(NOW)

    path.write_text(path.read_text().replace("prefix: REQ", "prefix: SR"))
    os.utime(path, ns=(1, 1))  # a new modification time even within the same clock tick
    second = schedule.in_force(NOW)
    assert second.policy.numbering.prefix == "SR"
    assert second.version != first.version

    path.write_bytes(BROKEN)
    os.utime(path, ns=(2, 2))
    kept = schedule.in_force(NOW)
    assert (kept.policy, kept.version) == (second.policy, second.version)


NOW = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def version_text(prefix: str, effective_from: str | None, approved_by: str = "孙宇") -> str:
    """The shipped policy with another number prefix, an effective date and an approver."""
    head = f"approved_by: {approved_by}\n"
    if effective_from is not None:
        head += f"effective_from: {effective_from}\n"
    return head + DEFAULT_POLICY.read_text().replace("prefix: REQ", f"prefix: {prefix}")


@pytest.mark.unit
def test_a_directory_holds_versions_each_in_force_from_its_effective_date(tmp_path: Path) -> None:
    (tmp_path / "1-base.yaml").write_text(version_text("REQ", None))
    (tmp_path / "2-december.yaml").write_text(version_text("DEC", "2026-12-01T00:00:00+08:00"))
    (tmp_path / "3-january.yaml").write_text(version_text("JAN", "2027-01-01T00:00:00+08:00"))
    (tmp_path / "notes.txt").write_text("not a version")
    schedule = PolicySchedule(tmp_path, Policy)
    december = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # 2026-12-01 00:00 in Shanghai

    def prefix(moment: datetime) -> str:
        return schedule.in_force(moment).policy.numbering.prefix

    assert prefix(NOW) == "REQ"
    assert prefix(december - timedelta(microseconds=1)) == "REQ"
    assert prefix(december) == "DEC"
    assert prefix(datetime(2027, 6, 1, tzinfo=UTC)) == "JAN"
    found = schedule.in_force(december)
    assert (found.approved_by, found.effective_from) == ("孙宇", december)
    assert found.source.endswith("2-december.yaml")
    assert [v.policy.numbering.prefix for v in schedule.versions()] == ["REQ", "DEC", "JAN"]

    # A version added later is read; one that does not validate is refused, the others stay.
    (tmp_path / "4-broken.yaml").write_bytes(BROKEN)
    (tmp_path / "5-earlier.yaml").write_text(version_text("NOV", "2026-11-25T00:00:00+08:00"))
    assert prefix(datetime(2026, 11, 26, tzinfo=UTC)) == "NOV"
    assert prefix(december) == "DEC"


@pytest.mark.unit
def test_before_any_version_starts_the_earliest_is_in_force(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(version_text("LATER", "2027-03-01T00:00:00+08:00"))
    (tmp_path / "b.yaml").write_text(version_text("SOON", "2027-02-01T00:00:00+08:00"))
    assert PolicySchedule(tmp_path, Policy).in_force(NOW).policy.numbering.prefix == "SOON"


@pytest.mark.unit
def test_an_effective_date_needs_an_offset_and_an_empty_directory_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(PolicyError, match="effective_from needs a UTC offset"):
        parse_policy(version_text("REQ", "2026-12-01T00:00:00").encode(), Policy)
    with pytest.raises(PolicyError, match="no valid policy version"):
        PolicySchedule(tmp_path, Policy)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("http://[::1", "not a URL"),
        ("ftp://files.example.com/hook", "only http and https"),
        ("mailto:li.na@example.com", "only http and https"),
        ("https:///no-host", "no host"),
    ],
)
def test_a_webhook_address_that_cannot_be_sent_to_is_refused_at_load(
    address: str, problem: str
) -> None:
    first_agent = "email: li.na@desk.example.com}"
    document = DEFAULT_POLICY.read_text().replace(
        first_agent, f'email: li.na@desk.example.com, webhook_url: "{address}"}}', 1
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


@pytest.mark.unit
def test_periods_subtracted_from_now_are_bounded_so_the_workers_never_overflow() -> None:
    """dispatch closes what was resolved ``close_after`` before its now, intake forgets what
    closed ``retention`` before it: a million days would overflow the date in every round."""
    shipped = DEFAULT_POLICY.read_text()
    assert "  close_after: 7d" in shipped and "    max_future: 5m" in shipped

    def with_periods(days: int) -> bytes:
        document = shipped.replace("  close_after: 7d", f"  close_after: {days}d", 1)
        document = document.replace(
            "  resolve_unanswered_after: 7d", f"  resolve_unanswered_after: {days}d", 1
        )
        return document.replace(
            "    max_future: 5m", f"    max_future: 5m\n  retention: {days}d", 1
        ).encode()

    with pytest.raises(PolicyError) as caught:
        parse_policy(with_periods(1_000_000), Policy, source="policy.yaml")
    problems = caught.value.problems
    assert any("routing.close_after" in p for p in problems), problems
    assert any("routing.resolve_unanswered_after" in p for p in problems), problems
    assert any("intake.retention" in p for p in problems), problems
    policy = parse_policy(with_periods(36_500), Policy, source="policy.yaml")
    longest = timedelta(days=36_500)
    assert policy.routing.close_after == policy.intake.retention == longest
    assert policy.routing.resolve_unanswered_after == longest
    assert datetime.now(UTC) - longest < datetime.now(UTC), "still a date"


@pytest.mark.unit
def test_an_automatic_resolution_of_unanswered_tickets_names_a_reply_the_policy_has() -> None:
    """Without its text dispatch could not resolve; the mistake is the operator's to see."""
    shipped = DEFAULT_POLICY.read_text()
    named = "  unanswered_resolution: no_reply"
    assert named in shipped

    def problems(document: str) -> list[str]:
        with pytest.raises(PolicyError) as caught:
            parse_policy(document.encode(), Policy, source="policy.yaml")
        return caught.value.problems

    unknown = problems(shipped.replace(named, "  unanswered_resolution: no_such_reply", 1))
    assert any("unknown reply 'no_such_reply'" in p for p in unknown), unknown
    late = shipped.replace("  remind_unanswered_after: 3d", "  remind_unanswered_after: 7d", 1)
    assert any("must be shorter" in p for p in problems(late)), "a reminder after the resolution"
    missing = problems(shipped.replace(named, "", 1))
    assert any("needs routing.unanswered_resolution" in p for p in missing), missing
    off = shipped.replace(named, "", 1).replace(
        "  resolve_unanswered_after: 7d", "  resolve_unanswered_after: null", 1
    )
    assert (
        parse_policy(off.encode(), Policy, source="policy.yaml").routing.resolve_unanswered_after
        is None
    )


@pytest.mark.unit
def test_a_notification_rules_condition_on_what_an_event_says_fits_that_event_only() -> None:
    """``satisfied`` (a score against sla.satisfaction.satisfied_from) is a condition of
    satisfaction rules, ``by_reply`` of reopen rules: on another event it could never hold, a
    mistake the operator hears of when the policy loads."""
    shipped = DEFAULT_POLICY.read_text()
    rule = "       channels: [webhook, email], satisfied: false}"
    assert rule in shipped
    policy = parse_policy(shipped.encode(), Policy, source="policy.yaml")
    assert policy.notifications is not None
    conditions = {
        r.event: (r.satisfied, r.by_reply, r.causes, r.assigned, r.by_person, r.by_assignee)
        for r in policy.notifications.rules
        if (r.satisfied, r.by_reply, r.causes, r.assigned, r.by_person, r.by_assignee)
        != (None,) * 6
    }
    assert conditions == {
        "ticket.satisfaction_recorded": (False, None, None, None, None, None),
        "ticket.reopened": (None, False, None, None, None, None),
        "ticket.resolved": (None, None, None, None, False, None),
        "ticket.queued": (None, None, ["reopened"], None, None, None),
        "sla.clock_warned": (None, None, None, False, None, None),
        "ticket.escalated": (None, None, None, None, True, None),
        "ticket.responded": (None, None, None, None, None, False),
        "ticket.note_added": (None, None, None, None, None, False),
    }
    for changed in (
        shipped.replace("template: dissatisfied,", "template: dissatisfied, by_reply: false,", 1),
        shipped.replace(
            "{event: ticket.closed, to: customer,",
            "{event: ticket.closed, satisfied: true, to: customer,",
            1,
        ),
        shipped.replace("template: dissatisfied,", "template: dissatisfied, causes: [queue],", 1),
        shipped.replace("template: dissatisfied,", "template: dissatisfied, assigned: true,", 1),
        shipped.replace("template: dissatisfied,", "template: dissatisfied, by_person: true,", 1),
        shipped.replace("template: dissatisfied,", "template: dissatisfied, by_assignee: no,", 1),
    ):
        assert changed != shipped
        with pytest.raises(PolicyError) as caught:
            parse_policy(changed.encode(), Policy, source="policy.yaml")
        assert any("a condition of" in p for p in caught.value.problems), caught.value.problems
    with pytest.raises(PolicyError) as caught:
        parse_policy(shipped.replace(rule, rule.replace("false", "often"), 1).encode(), Policy)
    assert caught.value.problems


@pytest.mark.unit
def test_a_limit_on_notices_reads_any_unit_and_is_bounded() -> None:
    """``at_most`` limits what one customer is sent automatically (the shipped acknowledgement:
    10 an hour), and what an agent is told of one ticket's replies (5 an hour)."""
    shipped = DEFAULT_POLICY.read_text()
    limit = "at_most: {count: 10, per: 1h}"
    assert limit in shipped
    policy = parse_policy(shipped.encode(), Policy, source="policy.yaml")
    assert policy.notifications is not None
    limits = {
        (r.template, r.to): (r.at_most.count, r.at_most.per)
        for r in policy.notifications.rules
        if r.at_most is not None
    }
    assert limits == {
        ("acknowledgement", "customer"): (10, timedelta(hours=1)),
        ("customer_reply", "assignee"): (5, timedelta(hours=1)),
    }
    minutes = parse_policy(shipped.replace(limit, "at_most: {count: 3, per: 90m}").encode(), Policy)
    assert minutes.notifications is not None
    per = {r.template: r.at_most.per for r in minutes.notifications.rules if r.at_most}
    assert per["acknowledgement"] == timedelta(minutes=90)
    ack = "template: acknowledgement,"
    for wrong, at, problem in (
        (ack, "at_most: {count: 0, per: 1h}", "greater than or equal to 1"),
        (ack, "at_most: {count: 1, per: 0s}", "greater than 0"),
        (ack, "at_most: {count: 1, per: 400d}", "less than or equal to"),
    ):
        changed = shipped.replace(limit, "").replace(wrong, f"{wrong} {at}, ", 1)
        with pytest.raises(PolicyError) as caught:
            parse_policy(changed.encode(), Policy, source="policy.yaml")
        assert any(problem in p for p in caught.value.problems), caught.value.problems


@pytest.mark.unit
def test_a_template_naming_no_filter_there_is_or_a_zone_nobody_knows_is_refused() -> None:
    shipped = DEFAULT_POLICY.read_text()
    for old, new, problem in (
        ("at {{ event.deadline | local }}.", "at {{ event.deadline | localtime }}.", "No filter"),
        ("  time_zone: Asia/Shanghai      #", "  time_zone: Asia/Shangai      #", "time zone"),
    ):
        assert old in shipped
        with pytest.raises(PolicyError) as caught:
            parse_policy(shipped.replace(old, new, 1).encode(), Policy, source="policy.yaml")
        assert any(problem in p for p in caught.value.problems), caught.value.problems


@pytest.mark.unit
def test_an_escalation_step_no_calendar_reaches_or_one_before_the_breach_is_refused() -> None:
    """A step a year of business time after the breach, under office hours (about four years
    away): computing that clock's timer would raise, and the timer worker computes every due
    clock's in one round — it would fail for every ticket. And no step fires before the
    breach."""
    shipped = DEFAULT_POLICY.read_text()
    step = "    - {level: 3, after: 2h}"
    assert step in shipped
    with pytest.raises(PolicyError) as caught:
        parse_policy(shipped.replace(step, "    - {level: 3, after: 365d}").encode(), Policy)
    assert any("not reached within three years of 'office'" in p for p in caught.value.problems)
    with pytest.raises(PolicyError) as caught:
        parse_policy(shipped.replace(step, "    - {level: 3, after: -3600}").encode(), Policy)
    assert any("sla.escalation[2].after" in p for p in caught.value.problems), caught.value.problems
    reachable = parse_policy(shipped.replace(step, "    - {level: 3, after: 30d}").encode(), Policy)
    assert reachable.sla is not None
    assert reachable.sla.escalation[2].after == timedelta(days=30)


@pytest.mark.unit
@pytest.mark.parametrize("address", ["Li Na <li.na@desk.example.com>", "li.na;x@desk.example.com"])
def test_an_agents_address_mail_would_not_go_to_as_written_is_refused_at_load(address: str) -> None:
    """The SMTP client reparses what it is given: ``Li Na <li.na@…>`` or ``li.na;x@…`` would
    be mailed to another mailbox, or fail every notice later; the policy says so at load."""
    shipped = DEFAULT_POLICY.read_text()
    written = "email: li.na@desk.example.com}"
    assert written in shipped
    with pytest.raises(PolicyError) as caught:
        parse_policy(shipped.replace(written, f'email: "{address}"}}', 1).encode(), Policy)
    assert any("not an address mail can be sent to" in p for p in caught.value.problems)

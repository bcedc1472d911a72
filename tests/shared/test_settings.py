"""Settings: one typed place, DESK_ prefix, conventional names for the two URLs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from faststream.security import BaseSecurity, SASLScram512

from services.console.settings import ConsoleSettings
from services.dispatch.settings import DispatchSettings
from services.intake.settings import IntakeSettings
from services.notify.settings import NotifySettings
from services.sla.settings import SlaSettings
from shared.settings import Settings

pytestmark = pytest.mark.unit


def test_environment_is_read_with_prefix_and_conventional_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/x")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("DESK_TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("DESK_CONSUMER_RETRY_BACKOFF", "2s")
    monkeypatch.setenv("DESK_KAFKA_ENABLE_IDEMPOTENCE", "false")
    settings = Settings()
    assert settings.database_url == "postgresql://db/x"
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert settings.topic_partitions == 12
    assert settings.consumer_retry_backoff == timedelta(seconds=2)
    assert settings.kafka_enable_idempotence is False


def test_environment_round_trips_to_a_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(database_url="postgresql://db/x", relay_poll_interval="1h30m")
    for name, value in original.environment().items():
        monkeypatch.setenv(name, value)
    assert Settings() == original


def test_invalid_values_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="topic_partitions"):
        Settings(topic_partitions=0)
    with pytest.raises(ValueError, match="relay_poll_interval"):
        Settings(relay_poll_interval="soon")
    with pytest.raises(ValueError, match="topic_prefix"):
        Settings(topic_prefix="bad prefix!")


def test_broker_security_is_handed_to_faststream() -> None:
    assert Settings().kafka_security() is None
    tls = Settings(kafka_security_protocol="SSL").kafka_security()
    assert isinstance(tls, BaseSecurity) and tls.use_ssl
    sasl = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="desk",
        kafka_sasl_password="secret",
    ).kafka_security()
    assert isinstance(sasl, SASLScram512)
    assert sasl.use_ssl
    with pytest.raises(ValueError, match="SASL_MECHANISM"):
        Settings(kafka_security_protocol="SASL_PLAINTEXT").kafka_security()


def test_a_field_these_settings_do_not_have_is_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match="smtp_host"):
        Settings(smtp_host="mail.example.com")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="no_such_field"):
        Settings().replace(no_such_field=1)


def test_a_service_settings_class_reads_kernel_settings_with_its_own_defaults() -> None:
    class TunedSettings(Settings):
        tuned_batch: int = 7

    tuned = TunedSettings.of(Settings(topic_prefix="p."))
    assert (tuned.topic_prefix, tuned.tuned_batch) == ("p.", 7)
    already = TunedSettings(tuned_batch=9)
    assert TunedSettings.of(already) is already
    assert already.replace(tuned_batch=3).tuned_batch == 3


SERVICE_SETTINGS = [Settings, ConsoleSettings, DispatchSettings, IntakeSettings, NotifySettings]
SERVICE_SETTINGS += [SlaSettings]


@pytest.mark.parametrize("kind", SERVICE_SETTINGS, ids=lambda k: k.__name__)
def test_every_interval_timeout_and_backoff_setting_refuses_nothing_or_less(
    kind: type[Settings],
) -> None:
    """A duration setting of zero was taken: ``DESK_NOTIFY_SEND_TIMEOUT=0s`` made the delivery
    worker divide by it at every start (restarted for ever, nothing sent), an interval of zero
    is a busy loop. Every one is refused at zero or below, with its name — but those whose zero
    means something (offsets committed after every batch, memory never trimmed), refused below
    zero only."""
    durations = [n for n, f in kind.model_fields.items() if f.annotation is timedelta]
    assert durations, kind
    for name in durations:
        zero_means = name in ("consumer_commit_interval", "memory_trim_interval")
        for value in ("-5s", -5) if zero_means else ("0s", -5):
            given: dict[str, Any] = {name: value}
            with pytest.raises(ValueError, match=name):
                kind(**given)
        assert kind().model_dump()[name] >= timedelta(0), f"{name}'s default"

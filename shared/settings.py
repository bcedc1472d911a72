"""The kernel's settings: what every servicedesk process needs, whichever service it runs.

Values come from the environment: ``DESK_<FIELD>`` for each field, plus the conventional
``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS``. When those two are unset, ``desk up`` and the
tests start embedded servers and hand their addresses to every process through the same
variables, so a service never knows whether its infrastructure is embedded or external.

A service's own settings (its HTTP port, its tuning) live in its package, in a subclass of
:class:`Settings`; a service process reads that class, and tools that start or inspect every
service read one class combining them all. The README's configuration table is generated from
these classes (``desk config``) and a test keeps the two in step.
"""

from __future__ import annotations

import ssl
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.durations import Duration, PositiveDuration


class Settings(BaseSettings):
    """Configuration every servicedesk process shares (a service, ``desk`` or a benchmark).

    Unknown fields are refused, not ignored: a service's setting given to settings that do not
    have it is a mistake to hear about, not a value to lose.
    """

    model_config = SettingsConfigDict(
        env_prefix="DESK_", extra="forbid", frozen=True, populate_by_name=True
    )

    # --- infrastructure -------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "DESK_DATABASE_URL", "database_url"),
        description="PostgreSQL URL. Unset: `desk up` starts an embedded PostgreSQL.",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "DESK_KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"
        ),
        description="Kafka bootstrap servers, comma separated. Unset: `desk up` starts the "
        "embedded broker.",
    )
    data_dir: Path = Field(
        default=Path(".desk"),
        description="Where `desk up` keeps embedded PostgreSQL data and its run file.",
    )
    database_name: str = Field(
        default="servicedesk", description="Database `desk up` creates on the embedded server."
    )

    # --- broker client --------------------------------------------------------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How clients connect to Kafka."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism for SASL_* protocols."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="CA bundle that signs the brokers' certificates."
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="Client certificate for mutual TLS."
    )
    kafka_ssl_keyfile: Path | None = Field(default=None, description="Client key for mutual TLS.")
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Verify that broker certificates match their host names."
    )
    kafka_enable_idempotence: bool = Field(
        default=True,
        description="Idempotent producer. The embedded broker refuses it; `desk up` turns it off "
        "there.",
    )
    kafka_acks: Literal["all", "1", "0"] = Field(
        default="all",
        description="Producer acknowledgements awaited before an event counts as published.",
    )
    kafka_linger_ms: int = Field(
        default=5, ge=0, description="Producer batching delay in milliseconds."
    )
    kafka_max_message_bytes: int = Field(
        default=1024 * 1024,
        ge=64 * 1024,
        description="Largest record a process sends or reads (the broker's `message.max.bytes`). "
        "Larger records are dead-lettered unread; a larger event cannot be stored.",
    )
    kafka_request_timeout_ms: int = Field(
        default=40_000,
        gt=0,
        description="Longest a producer waits for the broker (or for a topic's metadata) before "
        "the send fails.",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=500,
        ge=0,
        description="Longest a fetch waits for data. `desk up` sets 50 for the embedded broker.",
    )
    kafka_session_timeout_ms: int = Field(
        default=10_000, gt=0, description="Consumer-group session timeout."
    )
    kafka_heartbeat_interval_ms: int = Field(
        default=3_000, gt=0, description="Consumer-group heartbeat interval."
    )
    kafka_create_topics: bool = Field(
        default=True, description="Services create the topics they use at start (idempotent)."
    )
    topic_partitions: int = Field(
        default=6,
        ge=1,
        description="Partitions of created topics. `desk up` sets 2 for the embedded broker.",
    )
    topic_replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of created topics."
    )
    topic_prefix: str = Field(
        default="", description="Prefix of every topic name (isolates tests and tenants)."
    )

    # --- database -------------------------------------------------------------------------
    db_pool_min_size: int = Field(default=1, ge=0, description="Connections kept open.")
    db_pool_max_size: int = Field(default=10, ge=1, description="Most connections per process.")
    db_command_timeout: PositiveDuration = Field(
        default=timedelta(seconds=30), description="Longest a single SQL statement may run."
    )

    # --- HTTP side ----------------------------------------------------------------------
    http_host: str = Field(default="127.0.0.1", description="Interface the HTTP side binds to.")

    # --- behaviour ------------------------------------------------------------------------
    policy_file: Path | None = Field(
        default=None,
        description="The system's policy YAML, or a directory of policy versions (each in force "
        "from its effective_from). Unset: the shipped default policy.",
    )
    clock: Literal["database", "driven"] = Field(
        default="database",
        description="database: PostgreSQL's clock. driven: the desk_clock row, for tests.",
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: console on a terminal, JSON lines otherwise."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level written."
    )

    # --- security -------------------------------------------------------------------------
    local_mode: bool = Field(
        default=False,
        description="This machine only (`desk up` and the tests set it): loopback webhook and "
        "SMS endpoints are allowed. Outside it a process refuses to start without keys, with a "
        "weak or well-known key or secret, or connected to PostgreSQL as a superuser or owner.",
    )
    keys_file: Path | None = Field(
        default=None,
        description="JSON key ring: each key's kid, issuer, what it vouches for and secret "
        "(`desk up` writes `<data dir>/keys.json`).",
    )
    keys: SecretStr | None = Field(
        default=None,
        description="More keys, as the same JSON (from a secret store); added to the file's.",
    )
    master_key_file: Path | None = Field(
        default=None,
        description="File holding the master key (base64url of 32 random bytes) that wraps each "
        "customer's data key. Unset in local mode: `<data dir>/master.key`, made once.",
    )
    master_key: SecretStr | None = Field(
        default=None,
        description="The master key itself (from a secret store); wins over DESK_MASTER_KEY_FILE.",
    )
    master_keys_retired: SecretStr | None = Field(
        default=None,
        description="Master keys rotated out (base64url, comma separated): they only open data "
        "keys still wrapped under them, until `desk master-key rotate` has rewrapped those under "
        "the current one.",
    )
    master_keys_retired_file: Path | None = Field(
        default=None,
        description="File of retired master keys, one a line; added to DESK_MASTER_KEYS_RETIRED.",
    )
    token_max_ttl: PositiveDuration = Field(
        default=timedelta(days=7),
        description="Longest lifetime of an accepted token; at most DESK_PROCESSED_RETENTION, "
        "so a replayed command is either remembered or expired.",
    )
    allow_private_endpoints: bool = Field(
        default=False,
        description="Allow webhook and SMS endpoints in private, loopback and link-local "
        "ranges (local mode allows loopback).",
    )

    # --- kernel tuning --------------------------------------------------------------------
    relay_batch_size: int = Field(
        default=2000, ge=1, description="Events the relay reads and publishes per round."
    )
    relay_poll_interval: PositiveDuration = Field(
        default=timedelta(seconds=1),
        description="Fallback poll of the relay when no NOTIFY arrives.",
    )
    relay_mark_interval: PositiveDuration = Field(
        default=timedelta(milliseconds=250),
        description="How often a relay that publishes marks (dispatch's) says how far it has "
        "published, idle or not: timers waiting for them (sla's) fire up to about this late.",
    )
    consumer_concurrency: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Consumers per subscription in one process: one batch's Python work "
        "overlaps another's database work. `desk up` sets 1 for the embedded broker.",
    )
    consumer_commit_interval: Duration = Field(
        default=timedelta(0),
        ge=timedelta(0),
        description="Longest a consumer waits to commit the offsets it has processed: one "
        "commit an interval, not one a batch (0, the default: after every batch). A crash "
        "redelivers at most that much, which the processed ids skip.",
    )
    consumer_batch_size: int = Field(
        default=500, ge=1, description="Most messages a consumer handles in one transaction."
    )
    consumer_max_attempts: int = Field(
        default=5, ge=1, description="Attempts at a failing message before it is dead-lettered."
    )
    consumer_retry_backoff: PositiveDuration = Field(
        default=timedelta(milliseconds=250),
        description="First retry delay of a failing message; doubles each attempt.",
    )
    consumer_retry_backoff_max: PositiveDuration = Field(
        default=timedelta(seconds=30), description="Longest retry delay."
    )
    processed_retention: PositiveDuration = Field(
        default=timedelta(days=14),
        description="How long consumers remember processed message ids (longer than any "
        "redelivery: a message redelivered after it would be applied again).",
    )
    processed_purge_interval: PositiveDuration = Field(
        default=timedelta(minutes=10),
        description="How often each service purges processed message ids older than the retention.",
    )
    memory_trim_interval: Duration = Field(
        default=timedelta(minutes=1),
        ge=timedelta(0),
        description="How often each service hands the memory it has freed back to the system "
        "(glibc's malloc_trim; elsewhere nothing is done); 0: never. Without it a service's "
        "RSS grows with the traffic it has seen, not with what it holds.",
    )
    task_restart_backoff: PositiveDuration = Field(
        default=timedelta(seconds=1),
        description="First delay before a failed background task (relay, timers, deliveries, "
        "gauges, purges) runs again; doubles while it keeps failing.",
    )
    task_restart_backoff_max: PositiveDuration = Field(
        default=timedelta(minutes=1), description="Longest delay before a failed task runs again."
    )
    shutdown_grace: PositiveDuration = Field(
        default=timedelta(seconds=10),
        description=(
            "Time a process gets to stop cleanly: open requests get a quarter, batches in "
            "flight half; a service still stopping at 90 % of it logs what it waits on and "
            "exits with status 70."
        ),
    )

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix_is_a_name(cls, value: str) -> str:
        if value and not all(c.isalnum() or c in "._-" for c in value):
            raise ValueError("topic prefix may contain letters, digits, '.', '_' and '-' only")
        return value

    @model_validator(mode="after")
    def _tokens_expire_before_ids_are_forgotten(self) -> Self:
        if self.token_max_ttl > self.processed_retention:
            raise ValueError("token_max_ttl must not exceed processed_retention")
        return self

    # --- derived --------------------------------------------------------------------------
    def replace(self, **changes: Any) -> Self:
        """A validated copy with some fields changed (the environment is not read again)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    @classmethod
    def of(cls, settings: Settings) -> Self:
        """``settings`` as this class: themselves when they already are (a service's process,
        or the settings combining every service that ``desk``, tests and benchmarks use), else a
        copy with this class's defaults for the fields it adds."""
        if isinstance(settings, cls):
            return settings
        values = settings.model_dump()
        return cls.model_validate({k: v for k, v in values.items() if k in cls.model_fields})

    def topic(self, name: str) -> str:
        """The physical name of a logical topic (applies the prefix)."""
        return f"{self.topic_prefix}{name}"

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("DATABASE_URL is not set (run through `desk up`, or set it)")
        return self.database_url

    def require_bootstrap_servers(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise RuntimeError(
                "KAFKA_BOOTSTRAP_SERVERS is not set (run through `desk up`, or set it)"
            )
        return self.kafka_bootstrap_servers

    def kafka_security(self) -> Any:
        """FastStream security object for the configured protocol (None for PLAINTEXT)."""
        from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return None
        context = self.ssl_context() if protocol.endswith("SSL") else None
        if protocol == "SSL":
            return BaseSecurity(ssl_context=context, use_ssl=True)
        if not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"{protocol} needs DESK_KAFKA_SASL_MECHANISM, DESK_KAFKA_SASL_USERNAME and "
                "DESK_KAFKA_SASL_PASSWORD"
            )
        sasl = {
            "PLAIN": SASLPlaintext,
            "SCRAM-SHA-256": SASLScram256,
            "SCRAM-SHA-512": SASLScram512,
        }[self.kafka_sasl_mechanism]
        return sasl(
            username=self.kafka_sasl_username,
            password=self.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            use_ssl=protocol == "SASL_SSL",
        )

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None
        )
        context.check_hostname = self.kafka_ssl_check_hostname
        if self.kafka_ssl_certfile:
            context.load_cert_chain(
                str(self.kafka_ssl_certfile),
                str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
            )
        return context

    def environment(self) -> dict[str, str]:
        """These settings as environment variables, to hand to a child process."""
        env: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None:
                continue
            env[env_name(name, field)] = _env_text(value)
        return env


def env_name(name: str, field: Any) -> str:
    """The environment variable a field is read from (its conventional name if it has one)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        if isinstance(first, str):
            return first
    return f"DESK_{name.upper()}"


def _env_text(value: Any) -> str:
    from shared.durations import format_duration

    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return format_duration(value)
    return str(value)

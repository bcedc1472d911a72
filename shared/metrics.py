"""Prometheus metrics of the kernel, shared by every service (labelled by service name)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_HANDLED = Counter(
    "desk_messages_handled_total",
    "Messages a consumer applied (duplicates excluded).",
    ["service", "consumer"],
)
MESSAGES_DUPLICATE = Counter(
    "desk_messages_duplicate_total",
    "Redelivered messages a consumer skipped because it had applied them already.",
    ["service", "consumer"],
)
MESSAGES_RETRIED = Counter(
    "desk_messages_retried_total",
    "Failed attempts at a message that will be retried.",
    ["service", "consumer"],
)
MESSAGES_DEAD_LETTERED = Counter(
    "desk_messages_dead_lettered_total",
    "Messages sent to a dead-letter topic, by reason.",
    ["service", "consumer", "reason"],
)
CONSUMER_LAG = Gauge(
    "desk_consumer_lag_messages",
    "Records on a consumer's partitions not yet applied (high watermark minus committed offset), "
    "as of its last commit.",
    ["service", "consumer"],
)
BATCH_SECONDS = Histogram(
    "desk_consumer_batch_seconds",
    "Time to apply one polled batch in one transaction.",
    ["service", "consumer"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS_PUBLISHED = Counter(
    "desk_relay_events_published_total",
    "Events the relay published and the broker acknowledged.",
    ["service"],
)
RELAY_LAG = Gauge(
    "desk_relay_lag_events",
    "Events committed in the store but not yet published.",
    ["service"],
)
RELAY_LEADER = Gauge(
    "desk_relay_leader",
    "1 when this instance holds the relay lock of its service.",
    ["service"],
)
RELAY_BLOCKED = Gauge(
    "desk_relay_blocked_position",
    "Position of a stored event the broker refuses for good, where the relay is stopped "
    "(0 when it flows). See docs/architecture.md for the operator's action.",
    ["service"],
)
TASK_UP = Gauge(
    "desk_task_up",
    "1 while a background task runs, 0 after it failed until it has recovered.",
    ["service", "task"],
)
TASK_RESTARTS = Counter(
    "desk_task_restarts_total",
    "Background task failures, each followed by a restart after a backoff.",
    ["service", "task"],
)
DEAD_LETTERS_UNPUBLISHED = Gauge(
    "desk_dead_letters_unpublished",
    "Dead letters recorded in the service's table and not yet on their <topic>.dlq.",
    ["service"],
)
PROCESSED_PURGED = Counter(
    "desk_processed_ids_purged_total",
    "Processed message ids forgotten after the retention.",
    ["service"],
)

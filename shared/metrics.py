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

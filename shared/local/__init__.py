"""Local infrastructure: an embedded PostgreSQL and an embedded Kafka-protocol broker.

Product code, not test code: ``desk up`` runs the whole system on one machine with it, and the
test harness uses the same classes when no external servers and no Docker daemon are available.
"""

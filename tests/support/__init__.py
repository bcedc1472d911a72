"""Test helpers: real infrastructure, isolation per test, Kafka probes, processes."""

"""Our partitioner puts a key where the Java client (and aiokafka) would."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import murmur2 as reference
from hypothesis import given
from hypothesis import strategies as st

from shared.kafka import murmur2, partition_for

pytestmark = pytest.mark.unit


@given(st.binary(max_size=200))
def test_murmur2_matches_the_reference(key: bytes) -> None:
    assert murmur2(key) == reference(key)


@given(st.binary(min_size=1, max_size=60), st.integers(1, 64))
def test_a_key_goes_to_the_reference_partition(key: bytes, count: int) -> None:
    partitions = list(range(count))
    expected = (reference(key) & 0x7FFFFFFF) % count
    assert partition_for(key, partitions, partitions) == expected

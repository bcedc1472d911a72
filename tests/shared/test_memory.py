"""Freed memory handed back to the system: a service's RSS follows what it holds."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.memory import _TRIM
from shared.settings import Settings
from tests.support import probe
from tests.support.services import running

MB = 1 << 20


_FRAGMENTED = """
from shared.memory import release_free_memory
import os
def rss(): return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
buffers, kept = [], []
for _ in range(400):
    buffers.append(bytearray(64 * 1024))  # under the mmap threshold: from the heap
    kept.append(bytearray(512))  # something that outlives it, right after it
buffers.clear()
freed = rss()
print(release_free_memory(), freed - rss())
"""


@pytest.mark.skipif(_TRIM is None, reason="the C library has no malloc_trim (not glibc)")
def test_memory_freed_in_the_middle_of_the_heap_goes_back_to_the_system() -> None:
    """What a Kafka fetch leaves: buffers freed between blocks still in use, which malloc keeps
    (it hands back only what is free at the top of the heap). In a process of its own: in this
    one, whatever earlier tests freed decides where the blocks land."""
    done = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED], capture_output=True, text=True, check=True
    )
    released, returned = done.stdout.split()
    assert released == "True"
    assert int(returned) > 10 * MB, "25 MB were freed in the middle of the heap"


@pytest.mark.asyncio
async def test_every_service_trims_unless_told_not_to(settings: Settings) -> None:
    async with running(probe.build(settings, port=0, tally=False)) as service:
        trims = (await service.readiness()).get("trim_memory")
    async with running(probe.build(settings.replace(memory_trim_interval="0s"), port=0)) as off:
        never = "trim_memory" not in await off.readiness()
    assert trims is True
    assert never

"""Memory a service has freed, handed back to the system.

glibc's malloc keeps what a process frees for its next allocations, and hands back on its own
only what is free at the top of the heap. Kafka's fetch buffers and batches are freed in the
middle of it, so a service's RSS grew with the traffic it had seen, not with what it holds:
measured in the console over 10,500 tickets (`bench.e2e --soak`), malloc's memory in use stayed
at 25 MB while the free memory it kept doubled and RSS grew about 1.1 MB per 1,000 tickets;
one ``malloc_trim(0)`` took RSS back 9 MB at once. ``malloc_trim`` returns the free pages of
every arena, wherever they are, so trimming now and then makes RSS follow what is in use. Where
the C library has no such call (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.service import Service


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the system; True when some were (never where the C
    library cannot)."""
    return _TRIM is not None and bool(_TRIM(0))


async def trim_memory(service: Service) -> None:
    """A service's periodic trim (``memory_trim_interval``): a few milliseconds of a loop that
    is otherwise idle, not worth a thread."""
    release_free_memory()

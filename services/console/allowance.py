"""How many requests a channel client may post: a token bucket per verified client.

Each client (its token's subject, never anything the body says) holds up to ``limit`` requests
and earns them back evenly over ``window``: a burst of ``limit`` passes, then one per
``window / limit``. A refused request is told how long until the next one would pass (the
``Retry-After`` of a 429). The buckets live in the process: with several console instances each
counts its own share, so the limit is per instance — a bound on what one client can make one
instance do, not a quota. Idle buckets are forgotten once full again (they are then the same as
a new one), so memory follows the clients active within a window.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import timedelta


class Allowance:
    def __init__(
        self,
        limit: int,
        window: timedelta,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.per_request = window.total_seconds() / limit
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """client -> (requests left, when counted), least recently seen first."""

    @property
    def counted(self) -> int:
        """How many clients' buckets are held now (the memory the limiter takes)."""
        return len(self._buckets)

    def take(self, client: str) -> float:
        """Spend one request of ``client``'s: 0 when it may go, else seconds until it may."""
        now = self.clock()
        self._forget_full(now)
        left, counted = self._buckets.pop(client, (float(self.limit), now))
        left = min(float(self.limit), left + (now - counted) / self.per_request)
        if left < 1:
            self._buckets[client] = (left, now)
            return (1 - left) * self.per_request
        self._buckets[client] = (left - 1, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        """Drop the least recently seen buckets that have filled up again since."""
        while self._buckets:
            client, (left, counted) = next(iter(self._buckets.items()))
            if left + (now - counted) / self.per_request < self.limit:
                return
            del self._buckets[client]


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` header's value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))

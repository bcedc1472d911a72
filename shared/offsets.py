"""A consumer's processed offsets, committed to its group at most once an interval (opt-in:
``consumer_commit_interval``; the default, 0, commits after every batch).

Committing after every batch costs a broker round trip a batch, in the client and in the
broker, whatever the batch held (at a steady 20 requests a second, committing once a second
instead measured 7 % less CPU a ticket in one session and no difference in the next: not the
default until a gain shows). The offsets matter only
after a crash or a rebalance, and the processed ids already make a redelivery harmless, so a
batch only notes its offsets here and one commit an interval (``consumer_commit_interval``)
carries them all. What a crash can cost is redelivering an interval's records, each skipped by
its claim. A rebalance first commits the partitions it takes away, and a stop commits what was
processed, so neither redelivers more than a batch in flight.

Offsets are only ever committed for partitions the consumer still holds (a partition taken away
forgets its pending offset): a late commit never moves another owner's position back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from shared.logging import get_logger

log = get_logger(__name__)

PROMPT_COMMIT_SECONDS = 5.0
"""Longest a commit asked for now (a rebalance, a stop, a timer waiting on it) may take: with the
broker away, a stop must not wait out the client's request timeout for each consumer."""

Committed = Callable[[Any, dict[TopicPartition, int]], None]
"""Told of each commit that succeeded: the consumer and its offsets (for the lag gauge)."""


class PendingOffsets:
    """One consumer's offsets processed since its last commit."""

    def __init__(self, consumer: Any, interval: float, committed: Committed, name: str) -> None:
        self.consumer = consumer
        self.interval = interval
        self._committed = committed
        self._name = name
        self._pending: dict[TopicPartition, int] = {}
        self._later: asyncio.Task[None] | None = None
        self._failing = False
        self._closed = False

    @property
    def pending(self) -> dict[TopicPartition, int]:
        return dict(self._pending)

    async def processed(self, positions: dict[TopicPartition, int]) -> None:
        """A batch's transaction committed up to ``positions``: commit them now (an interval of
        0) or with the others at the end of the interval."""
        for tp, offset in positions.items():
            if offset > self._pending.get(tp, -1):
                self._pending[tp] = offset
        if self.interval <= 0:
            await self.commit()
        elif self._later is None or self._later.done():
            self._later = asyncio.create_task(self._commit_later())

    async def _commit_later(self) -> None:
        """Wait an interval, then commit; never raises (a failed commit tries again later).

        Whatever is still pending afterwards — a batch that came while the commit was in
        flight, or a commit that failed — gets the next interval: the last batch before a quiet
        spell must not wait for a batch that may never come.
        """
        await asyncio.sleep(self.interval)
        try:
            await self.commit_now()
        except Exception as error:  # the broker away, or anything else: keep them, try later
            if not self._failing:  # said once an outage, not once an interval
                log.warning(
                    "offset commit failed; will retry", consumer=self._name, error=repr(error)
                )
            self._failing = True
        else:
            self._failing = False
        if self._pending and not self._closed:  # closed meanwhile: its own commit takes them
            self._later = asyncio.create_task(self._commit_later())

    async def commit(self, only: Collection[TopicPartition] | None = None) -> None:
        """Commit what is pending (of ``only``, when given) for the partitions still held."""
        held = self.consumer.assignment()
        offsets: dict[TopicPartition, int] = {}
        for tp, offset in list(self._pending.items()):
            if only is not None and tp not in only:
                continue
            if tp in held:
                offsets[tp] = offset
            else:  # taken away: its new owner starts from the last commit
                del self._pending[tp]
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # A rebalance took the partitions away; their new owner redelivers from the last
            # committed offset and the claims make that harmless.
            log.warning(
                "offset commit refused after rebalance", consumer=self._name, error=str(error)
            )
            for tp in offsets:
                self._pending.pop(tp, None)
            return
        for tp, offset in offsets.items():
            if self._pending.get(tp) == offset:  # none newer came while committing
                del self._pending[tp]
        self._committed(self.consumer, offsets)

    async def commit_now(self, only: Collection[TopicPartition] | None = None) -> None:
        """:meth:`commit`, given up after ``PROMPT_COMMIT_SECONDS`` (raises ``TimeoutError``)."""
        await asyncio.wait_for(self.commit(only), PROMPT_COMMIT_SECONDS)

    def forget(self, partitions: Collection[TopicPartition]) -> None:
        """These partitions were taken away: their pending offsets are no longer ours."""
        for tp in partitions:
            self._pending.pop(tp, None)

    async def close(self) -> None:
        """Commit everything pending (a stop), then stop the timer."""
        self._closed = True  # a timer whose cancellation was lost must not start another
        if self._later is not None:
            self._later.cancel()
            await asyncio.gather(self._later, return_exceptions=True)
            self._later = None
        try:
            await self.commit_now()
        except Exception as error:  # redelivered to the next owner, and skipped by its claims
            log.warning("last offset commit failed", consumer=self._name, error=repr(error))

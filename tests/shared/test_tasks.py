"""Stopping the supervised tasks: bounded, whatever a task does with its cancellation."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
import structlog

from shared.tasks import BackgroundTasks

pytestmark = pytest.mark.asyncio


def _tasks() -> BackgroundTasks:
    return BackgroundTasks("probe", timedelta(milliseconds=100), timedelta(seconds=1))


async def test_stop_ends_tasks_that_answer_their_cancellation() -> None:
    tasks = _tasks()
    ended = asyncio.Event()

    async def worker() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    tasks.start("worker", worker)
    await asyncio.sleep(0)
    await tasks.stop(within=5)
    assert ended.is_set()


async def test_a_task_stuck_in_its_cancellation_is_left_behind_named_within_the_bound() -> None:
    tasks = _tasks()
    release = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        finally:  # like asyncpg cancelling a query on a server that does not answer
            await release.wait()

    tasks.start("stuck", stuck)
    await asyncio.sleep(0)
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        await tasks.stop(within=0.3)
        took = time.monotonic() - started
    assert 0.3 <= took < 2, took
    left = [e for e in logs if e["event"].startswith("background tasks did not stop in time")]
    assert left and left[0]["tasks"] == ["probe stuck"]
    release.set()
    await asyncio.sleep(0.01)


async def test_a_task_that_keeps_failing_fast_is_restarted_however_long_it_fails() -> None:
    """An outage of hours fails a task hundreds of times in a row; the supervisor must outlive
    every count (it once died of its own backoff's overflow, leaving the task down for good)."""
    tasks = BackgroundTasks("probe", timedelta(milliseconds=1), timedelta(milliseconds=2))
    runs = 0
    enough = asyncio.Event()

    async def failing() -> None:
        nonlocal runs
        runs += 1
        if runs >= 80:
            enough.set()
            await asyncio.Event().wait()
        raise OSError("the database is down")

    with structlog.testing.capture_logs():
        tasks.start("relay", failing)
        await asyncio.wait_for(enough.wait(), timeout=10)
    assert runs == 80
    await tasks.stop(within=5)

"""The supervisor keeps reading its children's output whatever they write: a child whose pipe is
not drained blocks at its next log line, frozen while it looks alive."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from shared.local.supervisor import Supervisor

pytestmark = pytest.mark.asyncio


async def test_a_log_line_longer_than_the_limit_is_cut_and_the_child_goes_on() -> None:
    shown = io.StringIO()
    supervisor = Supervisor(Console(file=shown, width=200), raw_logs=True)
    child = await supervisor.start(
        "talker",
        [sys.executable, "-c", "import sys; print('x' * 3_000_000); print('after', flush=True)"],
        {},
    )
    assert child.process is not None
    code = await asyncio.wait_for(child.process.wait(), 30)
    await asyncio.wait_for(asyncio.gather(*child.pumps), 30)
    await supervisor.stop(grace=5)
    assert code == 0
    output = shown.getvalue()
    assert "was cut" in output
    assert "after" in output


async def test_a_restart_that_cannot_start_the_process_is_tried_again(tmp_path: Path) -> None:
    """The child's program is gone when its restart comes (an OSError from the spawn): the
    watch goes on, and once the program is back the child runs again."""
    program, runs = tmp_path / "child.sh", tmp_path / "runs"
    script = f"#!/bin/sh\necho ran >> {runs}\nsleep 0.2\n"
    program.write_text(script)
    program.chmod(0o755)
    shown = io.StringIO()
    supervisor = Supervisor(Console(file=shown, width=200), raw_logs=True)
    await supervisor.start("flaky", [str(program)], {})
    await _until(runs.exists)
    program.unlink()  # gone before the restart (1 s after the exit)
    await _until(lambda: "cannot start" in shown.getvalue())
    program.write_text(script)
    program.chmod(0o755)
    await _until(lambda: runs.read_text().count("ran") >= 2)
    await supervisor.stop(grace=5)


async def _until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.05)

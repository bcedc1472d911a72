"""The supervisor keeps reading its children's output whatever they write: a child whose pipe is
not drained blocks at its next log line, frozen while it looks alive."""

from __future__ import annotations

import asyncio
import io
import sys

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

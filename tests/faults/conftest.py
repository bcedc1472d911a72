"""One running system per fault module (``desk up`` as users run it), and the figures report.

Each module runs its faults in sequence against one system, checking the invariant after each
(:mod:`tests.support.system`); the figures of every scenario are appended to
``.reports/faults/figures.jsonl`` (``docs/reliability.md`` quotes them), and ``desk up``'s log
and the receivers' journal are kept in ``.reports/faults/<module>/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.system import Figures, System, running_system, write_figures

REPORTS = Path(__file__).resolve().parents[2] / ".reports" / "faults"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(request: pytest.FixtureRequest) -> AsyncIterator[System]:
    module = request.module.__name__.rsplit(".", 1)[-1]
    env: dict[str, str] = getattr(request.module, "SYSTEM_ENV", {})
    async with running_system(REPORTS / module, env=env) as running:
        yield running


Report = Callable[..., None]


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """``report(figures, **extra)``: keep this scenario's figures for the reliability table."""

    def write(figures: Figures, **extra: Any) -> None:
        write_figures(REPORTS / "figures.jsonl", request.node.name, figures, **extra)

    return write

"""Running ``desk`` as a user does, against a test's world."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from shared.settings import Settings

DESK = str(Path(sys.executable).parent / "desk")


async def desk(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``desk ARGS`` in a subprocess with the world's settings in its environment."""
    return await asyncio.to_thread(
        subprocess.run,
        [DESK, *args],
        env={**os.environ, **settings.environment()},
        capture_output=True,
        text=True,
        check=False,
    )

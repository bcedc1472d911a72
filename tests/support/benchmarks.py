"""Running a benchmark as its user does: ``python -m bench.<name> …`` from the checkout, its
last line of output read as the JSON figures it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def bench(name: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """The figures ``python -m bench.<name> args`` printed; a failed run fails with its stderr."""
    command = [sys.executable, "-m", f"bench.{name}", *args]
    run = subprocess.run(
        command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return figures

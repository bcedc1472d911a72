"""Every service's public events, loaded into the shared registry (for docs and ``desk`` tools)."""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec

from shared.settings import SERVICE_NAMES


def load_all_events() -> None:
    """Import ``services.<name>.events`` for each service that has one."""
    for name in SERVICE_NAMES:
        module = f"services.{name}.events"
        if find_spec(module) is not None:
            import_module(module)

"""The four servicedesk services, and the ``desk`` command that runs and operates them.

Each service lives in its own package with the same layout (``events``, pure domain modules,
``handlers``, ``sql/``, ``app``); they share only the kernel in ``shared/`` and talk only through
Kafka. This module is the one place that lists them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from shared.settings import SERVICE_NAMES, ServiceName

if TYPE_CHECKING:
    from shared.migrations import Migration
    from shared.service import Service
    from shared.settings import Settings

__all__ = ["SERVICE_NAMES", "ServiceName", "build_service", "service_migrations"]


def build_service(name: ServiceName, settings: Settings) -> Service:
    """Construct (not start) one service from settings."""
    module = import_module(f"services.{name}.app")
    service: Service = module.build(settings)
    return service


def service_migrations(name: ServiceName) -> list[Migration]:
    """Kernel migrations followed by the service's own, as ``desk migrate`` applies them."""
    from shared.migrations import kernel_migrations

    module = import_module(f"services.{name}.app")
    return [*kernel_migrations(), *module.MIGRATIONS]

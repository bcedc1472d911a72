"""The servicedesk services, and the ``desk`` command that runs and operates them.

Every service is a package ``services/<name>/`` of the same shape:

* ``settings.py`` — one subclass of the kernel's :class:`~shared.settings.Settings` holding the
  service's HTTP port, ``<name>_port`` (``DESK_<NAME>_PORT``), and its own tuning;
* ``events.py`` — the events it publishes: the only module other services import;
* ``app.py`` — ``build(settings) -> Service`` and ``MIGRATIONS`` (its ``sql/``); ``__main__.py``
  serves it;
* ``queries.py`` — what operators' tools (``desk``) read of its tables, when they read any.

:data:`SERVICES` is the one list of them. ``desk up``, ``status``, ``migrate``, ``replay`` and
``config``, the generated documents and the tests go through the functions below, so a new
service is a new folder plus its name in that list.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

from shared.provenance import use_catalogue
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.events import EventData
    from shared.migrations import Migration
    from shared.service import Service

SERVICES: tuple[str, ...] = ("intake", "dispatch", "sla", "notify", "console")
"""Every service, in the order a request travels through them (the console, which watches them
all and acts only through dispatch, last)."""


def service_names() -> tuple[str, ...]:
    """:data:`SERVICES`, read when asked (so a test can add a service to it)."""
    return SERVICES


def port_field(name: str) -> str:
    """The settings field holding a service's HTTP port."""
    return f"{name}_port"


def settings_class(name: str) -> type[Settings]:
    """The subclass of :class:`Settings` that ``services/<name>/settings.py`` defines."""
    module = import_module(f"services.{name}.settings")
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Settings)
        and value.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise LookupError(f"{module.__name__} defines {len(found)} Settings classes, not one")
    if port_field(name) not in found[0].model_fields:
        raise LookupError(f"{found[0].__name__} has no {port_field(name)} field")
    return found[0]


def desk_settings_class() -> type[Settings]:
    """One settings class with every service's fields: it *is* each service's settings."""
    return _combined(service_names())


@cache
def _combined(names: tuple[str, ...]) -> type[Settings]:
    combined: type[Settings] = type(
        "DeskSettings",
        tuple(settings_class(name) for name in names),
        {"__module__": __name__, "__doc__": "The settings of every service at once."},
    )
    return combined


def desk_settings(**values: Any) -> Settings:
    """Settings of every service at once, from the environment and then ``values``: what
    ``desk``, the tests and the benchmarks use to build, start and find each service."""
    return desk_settings_class()(**values)


def port_of(settings: Settings, name: str) -> int:
    """The HTTP port a service listens on."""
    port: int = getattr(settings_class(name).of(settings), port_field(name))
    return port


def build_service(name: str, settings: Settings) -> Service:
    """Construct (not start) one service from settings."""
    module = import_module(f"services.{name}.app")
    service: Service = module.build(settings)
    return service


def service_migrations(name: str) -> list[Migration]:
    """Kernel migrations followed by the service's own, as ``desk migrate`` applies them."""
    from shared.migrations import kernel_migrations

    module = import_module(f"services.{name}.app")
    return [*kernel_migrations(), *module.MIGRATIONS]


def service_publishes(name: str) -> dict[str, tuple[type[EventData], ...]]:
    """What a service publishes, by topic: ``PUBLISHES`` of its ``events`` module."""
    module = f"services.{name}.events"
    if find_spec(module) is None:
        return {}
    publishes: dict[str, tuple[type[EventData], ...]] = getattr(
        import_module(module), "PUBLISHES", {}
    )
    return publishes


def event_owners() -> dict[str, str]:
    """The catalogue: each event type and the one service that publishes it.

    Computed once per list of services: consumers look it up for every event they read (the
    provenance check, the console's timeline), and walking every service's ``PUBLISHES`` each
    time was 7 % of the console's CPU in a burst."""
    return _owners(service_names())


@cache
def _owners(names: tuple[str, ...]) -> dict[str, str]:
    owners: dict[str, str] = {}
    for name in names:
        for types in service_publishes(name).values():
            for cls in types:
                owner = owners.setdefault(cls.event_type(), name)
                if owner != name:
                    raise LookupError(f"{cls.event_type()} is published by {owner} and {name}")
    return owners


use_catalogue(event_owners)
"""Every process that runs a service imports this package first: the kernel's consumers check
each event's producer against this catalogue (``shared.provenance``)."""


def key_issuers() -> dict[str, tuple[str, ...]]:
    """Who signs, and what each may vouch for: the operators' ``desk`` tool (agents), every
    service that publishes (``system``, and its own events), notify also customers of one
    ticket (the signed link of a resolution notice). A service that publishes nothing (the
    console, which sends people's commands signed with their own tokens) holds no key of its
    own. ``desk up`` and the tests make a local key for each."""
    issuers: dict[str, tuple[str, ...]] = {"desk": ("agents",)}
    for name in service_names():
        if service_publishes(name):
            issuers[name] = ("system", "customers") if name == "notify" else ("system",)
    return issuers


def load_all_events() -> None:
    """Import ``services.<name>.events`` of each service that has one (for docs and tools)."""
    for name in service_names():
        module = f"services.{name}.events"
        if find_spec(module) is not None:
            import_module(module)

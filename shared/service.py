"""The one shape every service shares.

A service is a FastStream app (its consumers) with an HTTP side (``/health``, ``/ready``,
``/metrics`` and its AsyncAPI document), a PostgreSQL schema of its own (event store, tracking,
read models), a relay publishing its events, and optional background workers (timers,
deliveries). Each service's ``app.py`` only says *what* it consumes, produces and projects::

    def build(settings: Settings) -> Service:
        own = IntakeSettings.of(settings)
        return Service("intake", own, port=own.intake_port,
                       publishes={"intake.events": [TicketReceived, ...]},
                       subscriptions=[...], projections=[...])

and ``python -m services.<name>`` serves it with :func:`serve`. A service with an HTTP API of its
own hands it over as ``http`` (any ASGI app); the kernel's routes are matched first and every
other request goes to it. Start order: credentials checked,
pool (as the service's own database role), migrations checked (``desk migrate`` applies them, as
the owner), topics, producer, projection catch-up, then consumers, then the background tasks —
the relay, the dead-letter publisher, the purge of processed ids and the service's workers, each
supervised (``shared/tasks.py``) — and stop in reverse.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from functools import partial
from typing import Any

import asyncpg
import uvicorn
from aiokafka import AIOKafkaProducer
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.asgi.types import ASGIApp, Receive, Scope, Send
from faststream.specification import AsyncAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.clock import Clock, DatabaseClock
from shared.consumer import ConsumerRunner, Subscription
from shared.database import create_pool
from shared.deadletter import DeadLetters, dead_letter_topics
from shared.events import EnvelopeOf, EventData
from shared.eventstore import EventStore
from shared.kafka import ensure_topics, make_broker, make_producer
from shared.keys import KeyRing, weak_secrets
from shared.keystore import KeyStore, MasterKeyError
from shared.logging import configure_logging, get_logger
from shared.memory import trim_memory
from shared.migrations import Migration, check_migrated, kernel_migrations
from shared.privileges import role_problems
from shared.projection import Log, Projection, catch_up
from shared.provenance import Provenance, catalogue, seal_dead_letter
from shared.relay import Relay
from shared.retention import purge_processed
from shared.settings import Settings
from shared.stopping import StopDeadline
from shared.tasks import BackgroundTasks

log = get_logger(__name__)

Worker = Callable[["Service"], Awaitable[None]]
"""A background loop of a service (it receives the running service and runs until cancelled)."""


class Service:
    """One servicedesk service, ready to be served by uvicorn."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        description: str,
        publishes: Mapping[str, Sequence[type[EventData]]],
        subscriptions: Sequence[Subscription[Any]] = (),
        projections: Sequence[Projection] = (),
        workers: Sequence[Worker] = (),
        migrations: Sequence[Migration] = (),
        port: int,
        clock: Clock | None = None,
        version: str = "1",
        http: ASGIApp | None = None,
        sends: Sequence[str] = (),
        log: Log | None = None,
        key_store: KeyStore | None = None,
        sealed_only: bool = False,
        marks: str | None = None,
        watches: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.port = port
        self.settings = settings
        self.schema = name
        self.database_url = settings.database_url
        """The URL this service connects with: its own login role's (``shared.privileges``)."""
        self.keys = KeyRing.from_settings(settings)
        self.publishes = {topic: tuple(types) for topic, types in publishes.items()}
        self.http = http
        """The service's own HTTP app (an API, pages), beside the kernel's routes."""
        self.marks = marks
        """The topic its relay publishes its marks to (``shared.relay``), if others act on the
        absence of its events. Only for a service that stamps each event with the clock read
        inside the transaction appending it (the mark's bound rests on it)."""
        self.sends = (*sends, *([marks] if marks else []))
        """Topics the service writes records to itself, not from its event store (the console
        sends people's commands, the relay its marks): created with its topics, granted to its
        Kafka principal."""
        self.watches = tuple(watches)
        """Topics the service reads outside its subscriptions, in no consumer group (another
        service's marks): created with its topics, granted to its Kafka principal."""
        self.closing = asyncio.Event()
        """Set when the process is asked to stop, before the HTTP server drains its connections:
        long-lived responses (event streams) end then instead of holding the shutdown up."""
        self._routes = {
            cls.event_type(): topic for topic, types in publishes.items() for cls in types
        }
        self.store = EventStore(
            schema=self.schema,
            source=f"servicedesk/{name}",
            event_types=set(self._routes),
            # Room for the key, the CloudEvents headers and the record's framing.
            max_event_bytes=settings.kafka_max_message_bytes - 16 * 1024,
            sealing=key_store,
            sealed_only=sealed_only,
        )
        self.key_store = key_store
        """The customers' data keys, when the service seals or opens personal fields."""
        self.projections = tuple(projections)
        self.log: Log = log or self.store
        """What the projections follow and catch up with at start: the event store, or a log
        the service keeps of others' events (the console's journal)."""
        self.workers = tuple(workers)
        self.migrations = [*kernel_migrations(), *migrations]
        self.broker = make_broker(
            settings, client_id=f"servicedesk-{name}", description=description
        )
        self.consumers = [ConsumerRunner(s, self) for s in subscriptions]
        for runner in self.consumers:
            runner.register(self.broker)
        self._declare_publications()
        self._clock = clock
        self._pool: asyncpg.Pool | None = None
        self._producer: AIOKafkaProducer | None = None
        self._dead_letters: DeadLetters | None = None
        self._provenance: Provenance | None = None
        self.tasks = BackgroundTasks(
            name, settings.task_restart_backoff, settings.task_restart_backoff_max
        )
        self.relay: Relay | None = None
        self.app = _Http(
            http,
            self.broker,
            asgi_routes=[
                ("/health", _health(self)),
                ("/ready", _ready(self)),
                ("/metrics", _metrics()),
            ],
            on_startup=[self._start_storage],
            after_startup=[self._start_background],
            on_shutdown=[self._stop_background],
            after_shutdown=[self._close_storage],
            specification=AsyncAPI(
                title=f"servicedesk {name}", version=version, description=description
            ),
            asyncapi_path="/docs/asyncapi",
            logger=logging.getLogger("faststream.app"),
        )

    # --- what handlers and workers use ----------------------------------------------------

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._pool

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._producer

    @property
    def dead_letters(self) -> DeadLetters:
        if self._dead_letters is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._dead_letters

    @property
    def provenance(self) -> Provenance:
        if self._provenance is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._provenance

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            self._clock = DatabaseClock(self.pool, driven=self.settings.clock == "driven")
        return self._clock

    def topic_for(self, event_type: str) -> str:
        """Physical topic an event type is published to."""
        return self.settings.topic(self._routes[event_type])

    def _declare_publications(self) -> None:
        """Tell the AsyncAPI document what this service publishes, and on which topic.

        The relay does the publishing (from the store); these FastStream publishers exist so
        that the document generated from the app describes every topic and payload.
        """
        for topic, types in self.publishes.items():
            for cls in types:
                self.broker.publisher(
                    self.settings.topic(topic),
                    title=f"{topic}:{cls.event_type()}",
                    description=(cls.__doc__ or "").strip(),
                    schema=EnvelopeOf[cls],  # type: ignore[valid-type]
                )

    def topics(self) -> list[str]:
        """Every physical topic this service reads or writes, dead-letter topics included."""
        consumed = [t for runner in self.consumers for t in runner.topics]
        produced = [self.settings.topic(t) for t in (*self.publishes, *self.sends, *self.watches)]
        return sorted({*consumed, *produced, *dead_letter_topics(consumed)})

    # --- lifecycle ------------------------------------------------------------------------

    async def _start_storage(self) -> None:
        settings = self.settings
        self._refuse_weak_credentials()
        self._pool = await create_pool(
            settings,
            schema=self.schema,
            application=f"servicedesk-{self.name}",
            url=self.database_url,
        )
        try:
            async with self.pool.acquire() as conn:
                await check_migrated(conn, self.schema, self.migrations)
                if problems := await role_problems(conn, self.schema):
                    if not settings.local_mode:
                        raise RuntimeError(f"{self.name} refuses to start: {'; '.join(problems)}")
                    log.warning("running with more database rights than needed", problems=problems)
                if self.key_store is not None and (
                    missing := await self.key_store.unconfigured(conn)
                ):
                    raise RuntimeError(
                        f"{self.name} refuses to start: customers' data keys are wrapped under "
                        f"master key(s) {', '.join(missing)}, not given to it (DESK_MASTER_KEY, "
                        "or DESK_MASTER_KEYS_RETIRED while a rotation runs)"
                    )
        except BaseException:
            await self._close_storage()
            raise
        owners = {**catalogue(), **dict.fromkeys(self._routes, self.name)}
        self._provenance = Provenance(self.keys, owners)
        if settings.kafka_create_topics:
            await ensure_topics(settings, self.topics())
        self._producer = make_producer(
            settings, client_id=f"servicedesk-{self.name}-relay", max_batch_size=256 * 1024
        )
        await self._producer.start()
        own_key = self.keys.signing_key(self.name)
        self._dead_letters = DeadLetters(
            self._producer,
            self.schema,
            self.clock,
            settings,
            seal=partial(seal_dead_letter, own_key) if own_key is not None else None,
        )
        async with self.pool.acquire() as conn:
            for projection in self.projections:
                await catch_up(conn, self.log, projection)

    async def _start_background(self) -> None:
        settings = self.settings
        relay = self.relay = Relay(
            service=self.name,
            database_url=self.database_url or settings.require_database_url(),
            schema=self.schema,
            producer=self.producer,
            route=self.topic_for,
            key=self.keys.signing_key(self.name),  # present whenever it publishes (start checks)
            batch_size=settings.relay_batch_size,
            poll_interval=settings.relay_poll_interval,
            finish_within=settings.shutdown_grace.total_seconds() / 4,
            max_record_bytes=settings.kafka_max_message_bytes,
            marks_topic=settings.topic(self.marks) if self.marks else None,
            mark_interval=settings.relay_mark_interval,
            driven_clock=settings.clock == "driven",
        )
        self.tasks.start("relay", relay.run)
        publish = partial(self.dead_letters.publish_forever, self.pool)
        self.tasks.start("publish_dead_letters", publish)
        purge = every(settings.processed_purge_interval, purge_processed)
        kernel = [purge]
        if settings.memory_trim_interval > timedelta(0):
            kernel.append(every(settings.memory_trim_interval, trim_memory))
        for worker in (*kernel, *self.workers):
            self.tasks.start(worker.__name__, partial(worker, self))
        log.info("service started", topics=self.topics(), port=self.port)

    def _refuse_weak_credentials(self) -> None:
        """Outside local mode: no keys, weak keys or default secrets stop the start. Anywhere:
        a service that publishes needs its own key, or no consumer would accept its events."""
        if not self.settings.local_mode:
            problems = self.keys.problems(issuer=self.name if self.publishes else None)
            problems += weak_secrets(self.settings)
            if problems:
                raise RuntimeError(f"{self.name} refuses to start: {'; '.join(problems)}")
        if self.key_store is not None:
            try:
                self.key_store.master  # noqa: B018 - read now, not at the first customer
            except MasterKeyError as error:
                raise RuntimeError(f"{self.name} refuses to start: {error}") from None
        if self.publishes and self.keys.signing_key(self.name) is None:
            raise RuntimeError(
                f"{self.name} has no key to seal its events with: add a key of issuer "
                f"{self.name!r} to DESK_KEYS_FILE or DESK_KEYS (`desk up` makes local ones)"
            )

    async def _stop_background(self) -> None:
        self.closing.set()
        for runner in self.consumers:
            await runner.stop()
        await self.tasks.stop(within=self.settings.shutdown_grace.total_seconds() / 4)

    async def _close_storage(self) -> None:
        """Neither the producer's flush nor the pool's wait for its connections is bounded by
        its library: each gets a quarter of the grace, then is abandoned (the pool's
        connections closed under whatever still holds them)."""
        bound = self.settings.shutdown_grace.total_seconds() / 4
        if self._producer is not None:
            try:
                await asyncio.wait_for(self._producer.stop(), bound)
            except TimeoutError:
                log.warning("relay producer did not flush in time; abandoned", after_s=bound)
            self._producer = None
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), bound)
            except TimeoutError:
                log.warning("database connections still held; closed anyway", after_s=bound)
                self._pool.terminate()
            self._pool = None
        log.info("service stopped")

    # --- health ---------------------------------------------------------------------------

    async def readiness(self) -> dict[str, bool]:
        """Each check behind ``/ready``: database, broker, consumers joined, and each background
        task by name (the relay first) running."""
        checks: dict[str, bool] = {}
        try:  # a pool with no connection free is not ready either: the acquire is bounded too
            async with self.pool.acquire(timeout=2) as conn:
                checks["database"] = await conn.fetchval("SELECT true", timeout=2) is True
        except Exception:
            checks["database"] = False
        checks["broker"] = await self.broker.ping(timeout=2)
        checks["consumers"] = all(r.joined for r in self.consumers)
        tasks = self.tasks.health
        checks["relay"] = tasks.pop("relay", False)
        return {**checks, **tasks}


class _Http(AsgiFastStream):
    """The kernel's routes (health, readiness, metrics, AsyncAPI) and the broker's lifespan;
    every other request goes to the service's own ASGI app, when it has one."""

    def __init__(self, fallback: ASGIApp | None, *brokers: Any, **options: Any) -> None:
        super().__init__(*brokers, **options)
        self.fallback = fallback

    async def not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fallback is not None and scope["type"] in ("http", "websocket"):
            await self.fallback(scope, receive, send)
            return
        await super().not_found(scope, receive, send)


def every(interval: timedelta, step: Worker) -> Worker:
    """A worker running ``step`` at start and then every ``interval``, forever: how gauges read
    from a service's tables stay fresh, and old processed ids are purged."""

    async def periodic(service: Service) -> None:
        while True:
            await step(service)
            await asyncio.sleep(interval.total_seconds())

    periodic.__name__ = step.__name__
    return periodic


def _health(service: Service) -> Any:
    @get(include_in_schema=False)
    async def health(scope: Any) -> AsgiResponse:
        """Liveness: the process and its event loop answer."""
        return _json({"service": service.name, "status": "alive"}, 200)

    return health


READY_FOR_S = 1.0
"""How long one readiness check answers ``/ready``: served without a token (probes, and on the
console's public port anyone), a flood of them costs one database round trip and one broker
ping a second, not one each."""


def _ready(service: Service) -> Any:
    last: list[tuple[float, asyncio.Future[dict[str, bool]]]] = []

    def checking() -> asyncio.Future[dict[str, bool]]:
        """The check in flight or made within READY_FOR_S, else a new one."""
        now = asyncio.get_running_loop().time()
        if last and now - last[0][0] < READY_FOR_S:
            return last[0][1]
        last[:] = [(now, asyncio.ensure_future(service.readiness()))]
        return last[0][1]

    @get(include_in_schema=False)
    async def ready(scope: Any) -> AsgiResponse:
        """Readiness: database and broker reachable, consumers in their groups, every background
        task running (a failed one is named, false, until it has recovered)."""
        checks = await asyncio.shield(checking())  # one caller leaving cancels no one's
        ok = all(checks.values())
        body = {"service": service.name, "status": "ready" if ok else "not ready", "checks": checks}
        return _json(body, 200 if ok else 503)

    return ready


def _metrics() -> Any:
    @get(include_in_schema=False)
    async def metrics(scope: Any) -> AsgiResponse:
        return AsgiResponse(generate_latest(), 200, headers={"content-type": CONTENT_TYPE_LATEST})

    return metrics


def _json(body: object, status: int) -> AsgiResponse:
    return AsgiResponse(
        json.dumps(body).encode(), status, headers={"content-type": "application/json"}
    )


def serve(name: str, build: Callable[[Settings], Service], settings_class: type[Settings]) -> None:
    """Entry point of ``python -m services.<name>``: the service's settings from the environment,
    logging, uvicorn."""
    settings = settings_class()
    configure_logging(name, log_format=settings.log_format, level=settings.log_level)
    service = build(settings)
    settle_garbage_collector()
    config = uvicorn.Config(
        service.app,
        host=settings.http_host,
        port=service.port,
        log_config=None,
        lifespan="on",
        # Open requests get a quarter of the grace; the rest is the consumers' and the relay's.
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace.total_seconds() / 4)),
    )
    deadline = StopDeadline(name, settings.shutdown_grace.total_seconds())
    _Server(config, service, deadline).run()


class _Server(uvicorn.Server):
    """uvicorn, telling the service it is closing as soon as a stop signal arrives, and
    arming the deadline by which the process is gone."""

    def __init__(self, config: uvicorn.Config, service: Service, deadline: StopDeadline) -> None:
        super().__init__(config)
        self.service = service
        self.deadline = deadline

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.deadline.arm()
        self.service.closing.set()
        super().handle_exit(sig, frame)


YOUNG_GENERATION_THRESHOLD = 20_000
"""Allocations between collections of the youngest generation (CPython's default is 700)."""


def settle_garbage_collector() -> None:
    """Fewer, cheaper garbage collections for a process that allocates per message.

    Each batch allocates tens of thousands of short-lived objects (records, models, rows), so
    CPython's default thresholds collect many times per batch and, worse, keep re-scanning the
    long-lived import-time objects. Freezing those and collecting the young generation less
    often cut intake's CPU per request by about 15 % (``python -m bench.intake``).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, 20, 20)

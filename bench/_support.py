"""What every benchmark needs: infrastructure, a fresh database, a JSON report."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import psutil
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services import desk_settings, key_issuers, port_of, service_migrations, service_names
from shared.database import connect, create_database, drop_database, with_database
from shared.kafka import client_options, make_producer
from shared.keys import KeyRing, local_key_file
from shared.local.broker import EMBEDDED_BROKER_SETTINGS
from shared.local.infrastructure import Infrastructure, start_infrastructure
from shared.logging import configure_logging
from shared.privileges import OWNER_ROLE, hand_over, provision, role_url, service_role
from shared.provenance import seal
from shared.relay import mark_record
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def written_policy(policy: dict[str, Any]) -> Path:
    """``policy`` written where a benchmark's services read it; removed when the run ends (a
    directory a run, left behind, piled up in /tmp)."""
    folder = Path(tempfile.mkdtemp(prefix="desk-bench-policy-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, allow_unicode=True))
    return path


@asynccontextmanager
async def bench_world(**overrides: Any) -> AsyncIterator[tuple[Settings, Infrastructure]]:
    """Settings pointing at real infrastructure: ``DATABASE_URL``/``KAFKA_BOOTSTRAP_SERVERS``
    if set, embedded servers otherwise (PostgreSQL with its default durability), and that
    infrastructure (whose processes :class:`CpuMeter` watches)."""
    configure_logging("bench", log_format="console", level="WARNING")
    data_dir = Path(tempfile.mkdtemp(prefix="desk-bench-"))
    base = desk_settings(data_dir=data_dir)
    infra = await start_infrastructure(base, services=service_names())
    broker = EMBEDDED_BROKER_SETTINGS if infra.embedded_broker else {}
    keys = local_key_file(data_dir / "keys.json", {**key_issuers(), "bench": ("system",)})
    try:
        async with _fresh_database(infra) as database_url:
            yield (
                base.replace(
                    database_url=database_url,
                    kafka_bootstrap_servers=infra.bootstrap_servers,
                    topic_prefix=_topic_prefix(),
                    local_mode=True,
                    keys_file=keys,
                    **broker,
                    **overrides,
                ),
                infra,
            )
    finally:
        infra.stop()
        # An embedded PostgreSQL's data is half a gigabyte after a burst: left behind, a few
        # hundred runs filled this machine's disk and stopped the server mid-benchmark.
        shutil.rmtree(data_dir, ignore_errors=True)


@asynccontextmanager
async def beside(
    settings: Settings, infrastructure: Infrastructure, **overrides: Any
) -> AsyncIterator[Settings]:
    """A second system in :func:`bench_world`'s world: a database and topics of its own on the
    same servers, for two variants run side by side — whatever the machine does at a moment
    weighs on both alike."""
    async with _fresh_database(infrastructure) as database_url:
        yield settings.replace(database_url=database_url, topic_prefix=_topic_prefix(), **overrides)


@asynccontextmanager
async def _fresh_database(infra: Infrastructure) -> AsyncIterator[str]:
    """A database of its own, dropped afterwards; on the embedded server, owned by the owner role
    (with a role per service) and reached as it."""
    name = f"bench_{uuid4().hex[:8]}"
    admin = infra.admin_url or infra.database_url
    await create_database(admin, name)
    database_url = with_database(admin, name)
    try:
        if infra.admin_url is not None:
            conn = await connect(database_url)
            try:
                await hand_over(conn, name, ())
            finally:
                await conn.close()
            database_url = role_url(database_url, OWNER_ROLE)
        yield database_url
    finally:
        await drop_database(admin, name)


def _topic_prefix() -> str:
    return f"b{uuid4().hex[:8]}."


@asynccontextmanager
async def bench_settings(**overrides: Any) -> AsyncIterator[Settings]:
    """:func:`bench_world` for benchmarks that need only the settings."""
    async with bench_world(**overrides) as (settings, _):
        yield settings


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "database": "external" if os.environ.get("DATABASE_URL") else "embedded PostgreSQL 18",
        "broker": "external" if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else "embedded Tansu",
    }


Variant = tuple[int, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]
"""One variant's round side by side: the pid of its process, what hands it the round's work, and
what returns once the work is done."""


async def side_by_side(
    variants: dict[str, Variant], infrastructure: Infrastructure, units: int
) -> dict[str, float]:
    """Each variant handed its round at once (their sends interleaved, in ``variants``' order);
    each one's CPU ms a unit of work, from then until its own work is done — two variants that
    meet the same moment of a machine whose speed wanders."""
    meters = {mode: CpuMeter([pid], infrastructure) for mode, (pid, _, _) in variants.items()}
    for meter in meters.values():
        meter.start()

    async def measured(mode: str) -> tuple[str, float]:
        await variants[mode][2]()
        return mode, meters[mode].stop(units)["service"]

    await asyncio.gather(*(send() for _, send, _ in variants.values()))
    return dict(await asyncio.gather(*(measured(mode) for mode in variants)))


def bounds(rounds: int, size: int, warm_up: int) -> list[tuple[int, int]]:
    """Where each round's work starts and ends in what is handed out: the warm-up first."""
    return [(0, warm_up)] + [(warm_up + r * size, warm_up + (r + 1) * size) for r in range(rounds)]


def sealing_cost(cpu: dict[str, list[float]], unit: str) -> dict[str, Any]:
    """What sealing adds, from rounds of a variant in clear and one sealed run side by side:
    each round's CPU ms a ``unit`` by variant, their means, sealing's share over all rounds and
    each round's (with the rounds' median)."""
    rounds = len(cpu["clear"])
    total = {mode: sum(runs) for mode, runs in cpu.items()}
    if not total["clear"]:
        # The kernel counts CPU in 10 ms ticks: rounds that short measure nothing.
        raise SystemExit("rounds too short to measure: give each round more work")
    ratios = [100 * (s / c - 1) for c, s in zip(cpu["clear"], cpu["sealed"], strict=True)]
    return {
        f"service_cpu_ms_per_{unit}": {m: [round(ms, 4) for ms in r] for m, r in cpu.items()},
        f"mean_service_cpu_ms_per_{unit}": {m: round(t / rounds, 4) for m, t in total.items()},
        "sealing_cpu_pct": round(100 * (total["sealed"] / total["clear"] - 1), 1),
        "round_sealing_cpu_pct": [round(r, 1) for r in ratios],
        "round_pct_median": round(statistics.median(ratios), 1),
    }


def report(results: dict[str, Any]) -> None:
    """Print the benchmark's result as the last line of output (one JSON object)."""
    sys.stdout.write(json.dumps({**results, "machine": machine()}) + "\n")
    sys.stdout.flush()


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.start

    def rate(self, count: int) -> float:
        return round(count / self.seconds, 1)


class CpuMeter:
    """CPU seconds each part of the machine spent over a window: the services under test, the
    embedded database and broker (each with its child processes, including those that ended
    inside the window), the benchmark itself (publisher and watcher), and the machine idle.

    On a shared machine a throughput figure means little without where the cores went. External
    servers (``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS``) are not measured: their role is
    absent from the result.
    """

    def __init__(self, services: Sequence[int], infrastructure: Infrastructure) -> None:
        self.roots: dict[str, list[int]] = {"service": list(services), "bench": [os.getpid()]}
        if infrastructure.postgres is not None and infrastructure.postgres.pid:
            self.roots["postgres"] = [infrastructure.postgres.pid]
        if infrastructure.broker is not None and infrastructure.broker.pid:
            self.roots["broker"] = [infrastructure.broker.pid]
        self._start: dict[int, float] = {}
        self._started_at = 0.0
        self._machine: Any = None

    def _sample(self) -> dict[int, tuple[str, float, float]]:
        """pid -> (role, CPU seconds so far, creation time)."""
        seen: dict[int, tuple[str, float, float]] = {}
        for role, roots in self.roots.items():
            for pid in roots:
                try:
                    root = psutil.Process(pid)
                    # The bench's children are the services: counted as theirs, not its own.
                    family = [root] if role == "bench" else [root, *root.children(recursive=True)]
                    for process in family:
                        t = process.cpu_times()
                        spent = t.user + t.system
                        if process is root and role != "bench":
                            spent += t.children_user + t.children_system  # ended children
                        seen[process.pid] = (role, spent, process.create_time())
                except psutil.Error:
                    continue
        return seen

    def start(self) -> None:
        self._started_at = time.time()
        self._start = {pid: spent for pid, (_, spent, _) in self._sample().items()}
        self._machine = psutil.cpu_times()

    def stop(self, units: int) -> dict[str, float]:
        """Milliseconds of CPU per unit of work, by role, plus the machine's idle share."""
        end, machine = self._sample(), psutil.cpu_times()
        spent: dict[str, float] = {}
        for pid, (role, seconds, created) in end.items():
            if pid not in self._start and created < self._started_at - 1:
                continue  # not seen at the start though older than the window: unmeasurable
            spent[role] = spent.get(role, 0.0) + seconds - self._start.get(pid, 0.0)
        busy = {k: round(v * 1000 / units, 3) for k, v in sorted(spent.items())}
        total = sum(machine) - sum(self._machine)
        busy["machine_idle_share"] = round((machine.idle - self._machine.idle) / total, 3)
        return busy


class Watcher:
    """Follows a topic from its end and notes when each ticket's event of a type arrived."""

    def __init__(self, settings: Settings, topic: str, event_type: str) -> None:
        self.settings = settings
        self.topic = settings.topic(topic)
        self.event_type = event_type.encode()
        self.arrived: dict[str, float] = {}
        """Ticket number -> arrival (perf_counter)."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self.settings), enable_auto_commit=False, fetch_max_wait_ms=10
        )
        await consumer.start()
        await consumer._client.force_metadata_update()
        numbers = consumer.partitions_for_topic(self.topic) or set()
        if len(numbers) != self.settings.topic_partitions:
            raise RuntimeError(f"{self.topic} has partitions {numbers}")
        consumer.assign([TopicPartition(self.topic, p) for p in sorted(numbers)])
        await consumer.seek_to_end()
        self._task = asyncio.create_task(self._follow(consumer))

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=5000)
                now = time.perf_counter()
                for records in batch.values():
                    for record in records:
                        if dict(record.headers).get("ce_type") == self.event_type:
                            self.arrived[json.loads(record.value)["data"]["number"]] = now
        finally:
            await consumer.stop()

    async def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while len(self.arrived) < count:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(self.arrived)} of {count} arrived after {timeout}s")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def start_service(
    name: str, settings: Settings, *, module: str | None = None
) -> asyncio.subprocess.Process:
    """A service as its own process, as in production: migrated by the owner, run as its own
    database role; ready. ``module``: what to run instead of ``services.<name>`` (a variant
    of the service a benchmark compares with)."""
    env = {**settings.environment(), "DESK_LOG_LEVEL": "WARNING", "DESK_LOG_FORMAT": "json"}
    conn = await connect(settings.require_database_url())
    try:
        await provision(conn, name, service_migrations(name))
        env["DATABASE_URL"] = role_url(settings.require_database_url(), service_role(name))
    except LookupError:  # an external server without the roles: the configured URL it is
        pass
    finally:
        await conn.close()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module or f"services.{name}", env={**os.environ, **env}, cwd=ROOT
    )
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            try:
                response = await client.get(f"http://127.0.0.1:{port_of(settings, name)}/ready")
                if response.status_code == 200:
                    return process
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"{name} did not become ready")


Outgoing = list[tuple[str, bytes, list[tuple[str, bytes]]]]
"""(key, value, headers) of records to publish."""


def sealed(settings: Settings, publisher: str, records: Outgoing) -> Outgoing:
    """Records sealed by ``publisher``'s key, as its relay seals them (``shared.provenance``)."""
    key = KeyRing.from_settings(settings).signing_key(publisher)
    assert key is not None, f"no key of {publisher}"
    return [(k, v, [*h, *seal(key, v)]) for k, v, h in records]


async def publish(producer: AIOKafkaProducer, topic: str, events: Outgoing) -> None:
    """Send every record, then wait for every acknowledgement."""
    sends = [await producer.send(topic, value=v, key=k.encode(), headers=h) for k, v, h in events]
    await asyncio.gather(*sends)


@asynccontextmanager
async def marks_of(settings: Settings, service: str, every: float = 0.25) -> AsyncIterator[None]:
    """``service``'s relay marks while the benchmark stands in for it (it publishes the
    events itself, or none): a mark of PostgreSQL's clock every ``every`` seconds, sealed by
    its key, as its idle relay would — sla's timers wait for dispatch's (``shared.relay``)."""
    key = KeyRing.from_settings(settings).signing_key(service)
    producer = make_producer(settings, client_id=f"bench-{service}-marks")
    await producer.start()
    conn = await connect(settings.require_database_url())

    async def mark() -> None:
        while True:
            value, headers = mark_record(service, key, await conn.fetchval("SELECT now()"))
            await producer.send_and_wait(
                settings.topic(f"{service}.marks"), value, key=service.encode(), partition=0,
                headers=headers,
            )  # fmt: skip
            await asyncio.sleep(every)

    task = asyncio.create_task(mark())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await conn.close()

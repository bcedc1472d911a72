"""The embedded broker ends with what started it; one left behind is ended by the next start,
and only ever that one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from shared.local.broker import EmbeddedBroker
from shared.local.lifetime import PidFile, StillInUse


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_broker_whose_starter_died_is_ended_by_the_next_start(tmp_path: Path) -> None:
    pid_file = tmp_path / "broker.pid"
    # The first broker's starter exits at once without stopping it, and without the kernel's
    # help (as where PR_SET_PDEATHSIG does not exist): a `kill -9` of `desk up` elsewhere.
    script = (
        "import sys; from pathlib import Path; import shared.local.lifetime as lifetime\n"
        "from shared.local.broker import EmbeddedBroker\n"
        "lifetime._prctl = None\n"
        "b = EmbeddedBroker(pid_file=Path(sys.argv[1])); b.start(); print(b.pid)\n"
    )
    starter = subprocess.run(
        [sys.executable, "-c", script, str(pid_file)], capture_output=True, text=True, check=False
    )
    assert starter.returncode == 0, starter.stderr
    left_behind = int(starter.stdout.split()[-1])
    assert running(left_behind)

    broker = EmbeddedBroker(pid_file=pid_file)
    try:
        broker.start()
        assert not running(left_behind)
        assert running(broker.pid or 0)
    finally:
        broker.stop()
        if running(left_behind):  # the test failed: do not leave it behind ourselves
            psutil.Process(left_behind).kill()
    assert not pid_file.exists()


def test_a_stranger_with_the_recorded_pid_is_left_alone(tmp_path: Path) -> None:
    pid_file = PidFile(tmp_path / "broker.pid")
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file.record(stranger.pid)
        recorded = pid_file.path.read_text()
        # The pid now names another program (the broker ended, the pid was reused).
        pid_file.path.write_text(recorded.replace("time.sleep(60)", "the broker"))
        assert pid_file.end_leftover() is None
        assert stranger.poll() is None
        assert not pid_file.path.exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_a_process_is_recorded_with_its_command_even_the_instant_it_starts(
    tmp_path: Path,
) -> None:
    """Read at once, /proc can show an empty command line (the exec is not done): recorded so,
    the next start would take the leftover for a stranger and leave it running."""
    pid_file = PidFile(tmp_path / "broker.pid")
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    for _ in range(20):
        child = subprocess.Popen(command)
        try:
            pid_file.record(child.pid)
            assert json.loads(pid_file.path.read_text())["process"]["cmdline"] == command
        finally:
            child.kill()
            child.wait()


def test_a_process_a_running_program_started_is_not_taken_from_it(tmp_path: Path) -> None:
    pid_file = PidFile(tmp_path / "broker.pid")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file.record(child.pid)  # owner: this test process, alive
        with pytest.raises(StillInUse):
            pid_file.end_leftover()
        assert child.poll() is None
        assert pid_file.path.exists()
    finally:
        child.kill()
        child.wait()

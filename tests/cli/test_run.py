"""`desk up` / `desk status` as a user runs them: real processes, embedded infrastructure."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import psutil
import pytest

from services import service_migrations, service_names
from shared.database import connect
from shared.eventstore import EventStore, PendingEvent
from shared.local.ports import free_port
from shared.migrations import migrate
from shared.settings import Settings
from tests.support.probe import CounterBumped

DESK = str(Path(sys.executable).parent / "desk")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def desk_env() -> Iterator[dict[str, str]]:
    """The environment of `make run` on a fresh machine: nothing external configured.

    The data lives outside pytest's temporary folder: every pytest run on the machine resets
    that folder to owner-only access, and the embedded PostgreSQL (run as its own user when
    we are root) could then no longer be stopped.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"} and not k.startswith("DESK_")
    }
    data_dir = Path(tempfile.mkdtemp(prefix="desk-up-test-"))
    env["DESK_DATA_DIR"] = str(data_dir / "desk-data")
    for name in service_names():
        env[f"DESK_{name.upper()}_PORT"] = str(free_port())
    yield env
    shutil.rmtree(data_dir, ignore_errors=True)


def desk(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DESK, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def desk_up(desk_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "up.log").open("wb")
    process = subprocess.Popen(
        [DESK, "up"],
        env=desk_env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # like a terminal: Ctrl-C goes to this process group
    )
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


def wait_for_status(
    env: dict[str, str], want: int, timeout: float
) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout
    while True:
        result = desk("status", "--timeout", "2", env=env)
        if result.returncode == want or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_status_exits_non_zero_when_nothing_runs(desk_env: dict[str, str]) -> None:
    result = desk("status", "--timeout", "1", env=desk_env)
    assert result.returncode == 1
    assert "down" in result.stdout


def test_a_setting_that_fails_validation_is_one_line_not_a_traceback(
    desk_env: dict[str, str],
) -> None:
    result = desk("status", env={**desk_env, "DESK_NOTIFY_LEASE": "5s"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "desk: configuration: notify_lease (5s) must be longer than notify_send_timeout (10s): "
        "a notice still being sent would go again"
    ], result.stderr


def test_up_runs_everything_status_sees_it_and_ctrl_c_leaves_nothing_behind(
    desk_up: subprocess.Popen[bytes], desk_env: dict[str, str], tmp_path: Path
) -> None:
    status = wait_for_status(desk_env, want=0, timeout=120)
    log = (tmp_path / "up.log").read_text(errors="replace")
    assert status.returncode == 0, f"{status.stdout}\n--- desk up log ---\n{log[-4000:]}"
    rows = {line.split("│")[1].strip(): line for line in status.stdout.splitlines() if "│" in line}
    for component in ("postgres", "kafka", *service_names()):
        assert " up " in rows[component], rows.get(component)

    run = json.loads((Path(desk_env["DESK_DATA_DIR"]) / "run.json").read_text())
    pids = [run["desk_pid"], run["broker_pid"], run["postgres_pid"], *run["services"].values()]
    assert all(alive(pid) for pid in pids)
    assert "email" in run["services"], "desk up runs the email channel too"
    assert send_mail(run["email_adapter_port"]) == {}, "a mail taken (on the broker)"
    postgres = psutil.Process(run["postgres_pid"])
    everything = {p.pid for p in [postgres, *postgres.children(recursive=True)]} | set(pids)

    os.killpg(desk_up.pid, signal.SIGINT)  # Ctrl-C
    assert desk_up.wait(timeout=60) == 0

    left = [pid for pid in everything if alive(pid)]
    assert left == [], f"left behind: {[psutil.Process(p).cmdline() for p in left]}"
    strays = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if desk_env["DESK_DATA_DIR"] in " ".join(p.info["cmdline"] or [])
    ]
    assert strays == []
    assert not (Path(desk_env["DESK_DATA_DIR"]) / "run.json").exists()
    assert wait_for_status(desk_env, want=1, timeout=10).returncode == 1


def send_mail(port: int) -> dict[str, tuple[int, bytes]]:
    """A customer's mail to the email adapter, retried while it is still starting; the
    recipients it refused (none: the adapter published the request)."""
    message = EmailMessage()
    message["From"] = "Ann <ann@example.com>"
    message["To"] = "desk@desk.example.com"
    message["Subject"] = "Printer jams"
    message.set_content("The printer on floor 3 jams.")
    deadline = time.monotonic() + 60
    while True:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                return client.send_message(message)
        except (OSError, smtplib.SMTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def start_desk_up(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [DESK, "up"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_a_killed_desk_up_leaves_nothing_running_that_the_next_one_does_not_end(
    desk_up: subprocess.Popen[bytes], desk_env: dict[str, str], tmp_path: Path
) -> None:
    """kill -9 of `desk up` (a closed terminal, the OOM killer): its services and its broker end
    with it; PostgreSQL keeps the data and the next `desk up` adopts it, then stops it."""
    first = wait_for_status(desk_env, want=0, timeout=120)
    assert first.returncode == 0, (tmp_path / "up.log").read_text(errors="replace")[-4000:]
    run_file = Path(desk_env["DESK_DATA_DIR"]) / "run.json"
    killed = json.loads(run_file.read_text())
    started = [killed["broker_pid"], killed["postgres_pid"], *killed["services"].values()]
    again: subprocess.Popen[bytes] | None = None
    try:
        os.kill(desk_up.pid, signal.SIGKILL)  # desk up alone, not its children
        desk_up.wait(timeout=10)
        left = wait_gone([killed["broker_pid"], *killed["services"].values()], timeout=20)
        assert left == [], f"outlived desk up: {[psutil.Process(p).cmdline() for p in left]}"

        again = start_desk_up(desk_env, tmp_path / "up-again.log")
        status = wait_for_status(desk_env, want=0, timeout=120)
        log = (tmp_path / "up-again.log").read_text(errors="replace")
        assert status.returncode == 0, f"{status.stdout}\n--- desk up log ---\n{log[-4000:]}"
        second = json.loads(run_file.read_text())
        started += [second["broker_pid"], *second["services"].values()]
        assert second["broker_pid"] != killed["broker_pid"]
        assert second["postgres_pid"] == killed["postgres_pid"], "the database is adopted"
        os.killpg(again.pid, signal.SIGINT)
        assert again.wait(timeout=60) == 0
        left = wait_gone(started, timeout=10)
        assert left == [], f"left behind: {[psutil.Process(p).cmdline() for p in left]}"
    finally:
        if again is not None and again.poll() is None:
            os.killpg(again.pid, signal.SIGKILL)
        end_left_behind(started, Path(desk_env["DESK_DATA_DIR"]))


def end_left_behind(pids: list[int], data_dir: Path) -> None:
    """After a failure: end what this test's `desk up`s started (known pids, checked by their
    command lines)."""
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            command = " ".join(process.cmdline())
            if str(data_dir) in command:
                process.send_signal(signal.SIGQUIT)  # PostgreSQL: immediate shutdown
            elif "tansu" in command or "services." in command:
                process.kill()


# --- desk replay: one store at a time, never forward by accident ---------------------------


async def stores_with_unpublished_events(settings: Settings) -> None:
    """intake: 5 events, all published (relay at 5); dispatch: 3 events, only the first
    published (relay at 1); sla and notify: empty stores."""
    conn = await connect(settings.require_database_url())
    try:
        for service in service_names():
            await migrate(conn, service, service_migrations(service))
        for service, events, published in (("intake", 5, 5), ("dispatch", 3, 1)):
            store = EventStore(service, f"servicedesk/{service}")
            for n in range(events):
                pending = PendingEvent(CounterBumped(counter="c", amount=n), datetime.now(UTC), "c")
                await store.append(conn, "counter-c", None, [pending])
            await conn.execute(
                f"INSERT INTO {service}.checkpoints (name, position) VALUES ('relay', $1)",
                published,
            )
    finally:
        await conn.close()


async def relay_checkpoints(settings: Settings) -> dict[str, int]:
    conn = await connect(settings.require_database_url())
    try:
        return {
            service: await conn.fetchval(
                f"SELECT position FROM {service}.checkpoints WHERE name = 'relay'"
            )
            for service in ("intake", "dispatch")
        }
    finally:
        await conn.close()


async def desk_with(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.environment()}
    return await asyncio.to_thread(desk, *args, env=env)


@pytest.mark.asyncio
async def test_replay_from_a_position_names_one_store(settings: Settings) -> None:
    await stores_with_unpublished_events(settings)

    everywhere = await desk_with(settings, "replay", "--from", "2")
    assert everywhere.returncode != 0
    assert "one service" in everywhere.stdout
    assert await relay_checkpoints(settings) == {"intake": 5, "dispatch": 1}

    negative = await desk_with(settings, "replay", "intake", "--from", "-1")
    assert negative.returncode == 2  # a usage error: no position is below 0
    assert await relay_checkpoints(settings) == {"intake": 5, "dispatch": 1}

    back = await desk_with(settings, "replay", "intake", "--from", "2")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "intake: 3 events after position 2" in back.stdout
    assert await relay_checkpoints(settings) == {"intake": 2, "dispatch": 1}


@pytest.mark.asyncio
async def test_replay_never_moves_a_checkpoint_forward_unless_told(settings: Settings) -> None:
    await stores_with_unpublished_events(settings)

    forward = await desk_with(settings, "replay", "dispatch", "--from", "3")
    assert forward.returncode != 0
    assert "never published" in forward.stdout and "--skip-unpublished" in forward.stdout
    assert await relay_checkpoints(settings) == {"intake": 5, "dispatch": 1}

    past_the_end = await desk_with(
        settings, "replay", "dispatch", "--from", "4", "--skip-unpublished"
    )
    assert past_the_end.returncode != 0
    assert await relay_checkpoints(settings) == {"intake": 5, "dispatch": 1}

    told = await desk_with(settings, "replay", "dispatch", "--from", "3", "--skip-unpublished")
    assert told.returncode == 0, told.stdout + told.stderr
    assert await relay_checkpoints(settings) == {"intake": 5, "dispatch": 3}


@pytest.mark.asyncio
async def test_replay_without_a_position_republishes_every_store_from_the_start(
    settings: Settings,
) -> None:
    await stores_with_unpublished_events(settings)
    result = await desk_with(settings, "replay")
    assert result.returncode == 0, result.stdout + result.stderr
    assert await relay_checkpoints(settings) == {"intake": 0, "dispatch": 0}
    assert "intake: 5 events" in result.stdout and "dispatch: 3 events" in result.stdout


def test_serve_needs_a_running_desk_up_or_configured_servers(desk_env: dict[str, str]) -> None:
    """`desk serve` adds an instance to a running system; with nothing to join it says so."""
    alone = desk("serve", "dispatch", env=desk_env)
    assert alone.returncode != 0
    assert "no `desk up` is running" in alone.stdout
    unknown = desk("serve", "billing", env=desk_env)
    assert unknown.returncode != 0
    assert "unknown service billing" in unknown.stdout + unknown.stderr

"""Services as real OS processes, for tests that kill them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from importlib import import_module
from pathlib import Path

import httpx

from services import service_migrations, service_names
from shared.settings import Settings
from tests.support.infrastructure import blocking
from tests.support.services import migrated

ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """``python -m <module>`` with the test's settings in its environment."""

    def __init__(
        self,
        module: str,
        settings: Settings,
        port: int,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.module = module
        self.settings = settings
        self.port = port
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self._role_url: str | None = None

    def start(self, **extra_env: str) -> ServiceProcess:
        overrides = {**self.extra_env, **extra_env}
        env = {k: v for k, v in os.environ.items() if k != "DESK_CRASH_AT"}
        env.update(self.settings.environment())
        env["DATABASE_URL"] = self._database_url()
        env.update({"DESK_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", **overrides})
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def _database_url(self) -> str:
        """Migrated by the owner (once), then the service's own role, as production runs it."""
        if self._role_url is None:
            name = self.module.rsplit(".", 1)[-1]
            if name in service_names():
                migrations = service_migrations(name)
            else:
                migrations = import_module(self.module).build(self.settings).migrations
            self._role_url = blocking(migrated(self.settings, name, migrations))
        return self._role_url

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise AssertionError(f"{self.module} exited early:\n{self.logs()[-3000:]}")
                try:
                    response = await client.get(f"http://127.0.0.1:{self.port}/ready")
                    if response.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"{self.module} not ready after {timeout}s:\n{self.logs()[-3000:]}")

    async def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.module} still running after {timeout}s")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.killpg(self.pid, sig)

    async def stop(self) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                await self.wait_exit(15)
            except AssertionError:
                self.kill(signal.SIGKILL)
                await self.wait_exit(5)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

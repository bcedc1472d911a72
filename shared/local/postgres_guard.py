"""Stops an embedded PostgreSQL when the process that started it dies, however it dies.

``pg_ctl`` detaches the server, so a test session killed with SIGKILL (or a CI timeout) would
leave its throwaway server running, holding memory and connections, forever. The guard is a
tiny child of that session that the kernel signals when the session dies
(:func:`shared.local.lifetime.die_with_parent`); it then stops the server immediately. It is
meant for servers whose data nobody keeps — `desk up` adopts its server on the next start instead.

Run as ``python -m shared.local.postgres_guard DATA_DIR [SYSTEM_USER]``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from shared.local.postgres import pg_ctl


def main(argv: list[str]) -> int:
    data_dir = Path(argv[0])
    user = argv[1] if len(argv) > 1 and argv[1] else None
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    print("guarding", flush=True)  # the starter waits for this: a signal before it would be lost
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # and stops reading then
    signal.sigwait({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    if (data_dir / "postmaster.pid").exists():
        pg_ctl(data_dir, "-m", "immediate", "-t", "30", "stop", user=user)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

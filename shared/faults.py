"""Crash points: named places where a test can make a real process die with SIGKILL.

Exactly-once claims are only worth what their crash tests prove. A test starts a service with
``DESK_CRASH_AT=<point>`` (optionally ``<point>:<n>`` to die on the n-th pass) and the process
kills itself, without cleanup, the moment it reaches that point. Unset, this costs a dict lookup.

Points in the kernel: ``relay.before_publish``, ``relay.after_publish`` (published, checkpoint not
yet recorded), ``consumer.after_transaction`` (effects committed, offsets not yet committed).
"""

from __future__ import annotations

import os
import signal

_ENV = "DESK_CRASH_AT"
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here, like a power cut, if the environment names this point."""
    wanted = os.environ.get(_ENV)
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
